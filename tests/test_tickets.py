"""Tickets as files: bit packing, save/load round trips, sizes, errors, pickle refusal, export."""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import spikelottery.tickets as tickets
from spikelottery import SpikeLotteryError, SubnetLayer, kept_count, sparsify, topk_mask
from spikelottery.models import create_model
from spikelottery.patch import PatchSelector
from spikelottery.tickets import (
    FORMAT_VERSION,
    export_dense,
    export_onnx,
    load_ticket,
    pack_bits,
    read_ticket_info,
    save_ticket,
    unpack_bits,
)

# --------------------------------------------------------------------------- helpers

# Two timesteps and the eager LIF loop: compiling the fused neuron would cost more than
# these tiny models run.
_FAST = {"timesteps": 2, "neuron_kwargs": {"backend": "eager"}}


def _randomise_state(model: nn.Module) -> nn.Module:
    """Non-default BatchNorm statistics and affine values, so 'other tensors' matter."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.2)
    return model


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The zoo's multi-step neurons start every forward at rest: no reset needed.
    with torch.no_grad():
        return model(x)


def _assert_same_ticket(a: nn.Module, b: nn.Module) -> None:
    la = {n: m for n, m in a.named_modules() if isinstance(m, SubnetLayer)}
    lb = {n: m for n, m in b.named_modules() if isinstance(m, SubnetLayer)}
    assert la.keys() == lb.keys()
    for name, layer in la.items():
        other = lb[name]
        assert (layer.pa, layer.mode) == (other.pa, other.mode), name
        assert torch.equal(layer.mask(), other.mask()), name
        assert torch.equal(layer.effective_weight(), other.effective_weight()), name
        if layer.mode == "mp":
            assert torch.equal(layer.alpha(), other.alpha()), name


def _small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert not any(isinstance(m, SubnetLayer) for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.fixture
def cnn_ticket(tmp_path: Path) -> tuple[nn.Module, Path]:
    net = _randomise_state(_small_cnn()).eval()
    sparsify(net, 0.4, mode="mp", layer_pa={"3": 0.6})
    net[7].set_mode("lt")  # mixed modes in one ticket
    return net, save_ticket(net, tmp_path / "cnn.safetensors")


# --------------------------------------------------------------------------- bits


def test_pack_bits_order_is_little_endian() -> None:
    bits = torch.tensor([True, False, False, False, False, False, False, False, False, True])
    assert pack_bits(bits).tolist() == [1, 2]
    assert pack_bits(torch.tensor([[False, True], [True, True]])).tolist() == [0b1110]


@given(
    shape=st.lists(st.integers(0, 9), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    p=st.floats(0, 1),
)
def test_pack_bits_round_trip_any_shape(shape: list[int], seed: int, p: float) -> None:
    g = torch.Generator().manual_seed(seed)
    bits = torch.rand(shape, generator=g) < p
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(bits.numel() / 8)
    assert torch.equal(unpack_bits(packed, bits.shape), bits)


@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    pa=st.floats(0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_mask_round_trip_any_pa(shape: list[int], pa: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mask = topk_mask(torch.randn(shape, generator=g), pa)
    back = unpack_bits(pack_bits(mask), mask.shape)
    assert torch.equal(back, mask)
    assert int(back.sum()) == kept_count(mask.numel(), pa)


def test_unpack_bits_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="padding bits"):
        unpack_bits(torch.tensor([0b1000], dtype=torch.uint8), (3,))
    with pytest.raises(ValueError, match="expected 2 packed bytes"):
        unpack_bits(torch.tensor([1], dtype=torch.uint8), (9,))
    with pytest.raises(TypeError, match="torch.bool"):
        pack_bits(torch.ones(3))


# --------------------------------------------------------------------------- round trips


def test_user_model_round_trip_onto_fresh_dense_model(cnn_ticket, tmp_path: Path) -> None:
    net, path = cnn_ticket
    x = torch.randn(4, 3, 8, 8)
    fresh = _small_cnn().eval()
    rng = torch.get_rng_state()
    assert load_ticket(fresh, path) is fresh
    assert torch.equal(torch.get_rng_state(), rng)  # loading draws no random numbers
    _assert_same_ticket(net, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))
    assert [fresh[i].mode for i in (0, 3, 7, 9)] == ["mp", "mp", "lt", "mp"]
    assert fresh[3].pa == 0.6 and fresh[0].pa == 0.4
    # BatchNorm statistics and biases are part of the ticket
    assert torch.equal(fresh[1].running_var, net[1].running_var)
    assert torch.equal(fresh[0].bias, net[0].bias)


def test_round_trip_onto_sparsified_model(cnn_ticket) -> None:
    net, path = cnn_ticket
    other = sparsify(_small_cnn().eval(), 0.8, mode="lt")  # other pa, mode and random weights
    load_ticket(other, path)
    _assert_same_ticket(net, other)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(other(x), net(x))


def test_partly_sparsified_model_and_dense_layers_as_state(tmp_path: Path) -> None:
    net = _randomise_state(_small_cnn()).eval()
    sparsify(net, 0.5, mode="mp", filter=nn.Conv2d)  # linear layers stay dense
    path = save_ticket(net, tmp_path / "t.safetensors")
    info = read_ticket_info(path)
    assert [layer["name"] for layer in info.layers] == ["0", "3"]
    fresh = load_ticket(_small_cnn().eval(), path)
    assert type(fresh[7]) is nn.Linear and torch.equal(fresh[7].weight, net[7].weight)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "mode"),
    [
        ("vgg_tiny", {"img_size": 8, **_FAST}, "mp"),
        ("resnet_tiny", {"img_size": 8, **_FAST}, "lt"),
        ("spikformer_micro", {"img_size": 16, **_FAST}, "mp"),
    ],
)
def test_zoo_round_trip(name: str, kwargs: dict, mode: str, tmp_path: Path) -> None:
    net = _randomise_state(create_model(name, **kwargs)).eval()
    sparsify(net, 0.4, mode=mode)
    path = save_ticket(net, tmp_path / f"{name}.safetensors")
    fresh = load_ticket(_randomise_state(create_model(name, **kwargs)).eval(), path)
    _assert_same_ticket(net, fresh)
    x = torch.rand(2, 3, kwargs["img_size"], kwargs["img_size"])
    assert torch.equal(_out(fresh, x), _out(net, x))


def test_multisp_patch_embed_only_with_patch_pruning(tmp_path: Path) -> None:
    """The paper's MultiSp: mp ticket in the ConvPEP, patch pruning, dense transformer."""
    kwargs = {"img_size": 16, **_FAST}
    net = _randomise_state(create_model("spikformer_micro", **kwargs)).eval()
    sparsify(net, 0.4, 0.3, mode="mp", filter="patch_embed")
    path = save_ticket(net, tmp_path / "multisp.safetensors", metadata={"seed": "0"})
    info = read_ticket_info(path)
    assert (info.pb, info.patch_embed, info.metadata) == (0.3, "patch_embed", {"seed": "0"})
    assert all(layer["name"].startswith("patch_embed.") for layer in info.layers)
    x = torch.rand(2, 3, 16, 16)
    for target in (
        create_model("spikformer_micro", **kwargs).eval(),
        sparsify(create_model("spikformer_micro", **kwargs).eval(), 0.7, 0.5, filter="patch_embed"),
    ):
        load_ticket(target, path)
        selector = target.patch_embed.patch_selector
        assert isinstance(selector, PatchSelector) and selector.pb == 0.3
        _assert_same_ticket(net, target)
        assert type(target.blocks[0].mlp.fc1.linear) is nn.Linear
        assert torch.equal(_out(target, x), _out(net, x))
        kept = kept_count(target.num_patches, 0.3)
        assert selector.last_indices.shape == (2, kept) and kept < target.num_patches


def test_spikingjelly_multistep_round_trip(tmp_path: Path) -> None:
    from spikingjelly.activation_based import functional, layer, neuron

    def build() -> nn.Module:
        return nn.Sequential(
            layer.Conv2d(2, 6, 3, padding=1, step_mode="m"),
            layer.BatchNorm2d(6, step_mode="m"),
            neuron.LIFNode(tau=2.0, step_mode="m"),
            layer.Flatten(start_dim=1, step_mode="m"),
            layer.Linear(6 * 6 * 6, 4, step_mode="m"),
        ).eval()

    net = sparsify(_randomise_state(build()), 0.5, mode="mp")
    assert isinstance(net[0], layer.Conv2d)
    path = save_ticket(net, tmp_path / "sj.safetensors")
    fresh = load_ticket(build(), path)
    assert isinstance(fresh[0], layer.Conv2d) and isinstance(fresh[0], SubnetLayer)
    _assert_same_ticket(net, fresh)
    x = (torch.rand(4, 3, 2, 6, 6) < 0.5).float()  # [T, B, C, H, W] events
    with torch.no_grad():
        y = net(x)
        functional.reset_net(net)
        assert y.shape == (4, 3, 4)
        assert torch.equal(fresh(x), y)
        functional.reset_net(fresh)


def test_scores_and_half_weights_options(tmp_path: Path) -> None:
    net = sparsify(_small_cnn().eval(), 0.5, mode="lt")
    full = save_ticket(net, tmp_path / "full.safetensors")
    half = save_ticket(net, tmp_path / "half.safetensors", weight_dtype="float16")
    scored = save_ticket(net, tmp_path / "scores.safetensors", include_scores=True)
    assert half.stat().st_size < full.stat().st_size
    with safetensors.safe_open(half, "pt") as f:
        assert f.get_tensor("weight/0").dtype == torch.float16
    a = load_ticket(_small_cnn().eval(), half)
    for i in (0, 3, 7, 9):
        assert torch.equal(a[i].mask(), net[i].mask())
        torch.testing.assert_close(
            a[i].effective_weight(), net[i].effective_weight(), rtol=1e-3, atol=1e-4
        )
    b = load_ticket(_small_cnn().eval(), scored)
    assert read_ticket_info(scored).include_scores
    for i in (0, 3, 7, 9):
        assert torch.equal(b[i].scores, net[i].scores)
    c = load_ticket(_small_cnn().eval(), full)
    assert torch.equal(c[0].scores, c[0].mask().float())  # 0/1 encoding of the mask
    with pytest.raises(ValueError, match="weight_dtype"):
        save_ticket(net, tmp_path / "x.safetensors", weight_dtype="int8")


def test_metadata(cnn_ticket, tmp_path: Path) -> None:
    from spikelottery import __version__

    net, path = cnn_ticket
    info = read_ticket_info(path)
    assert info.format_version == FORMAT_VERSION == "1"
    assert info.library_version == __version__
    assert (info.pa, info.pb, info.mode, info.patch_embed) == (0.4, 0.0, "mp", None)
    first = info.layers[0]
    assert first == {
        "name": "0",
        "class": "SubnetConv",
        "dense": "Conv2d",
        "shape": [8, 3, 3, 3],
        "pa": 0.4,
        "mode": "mp",
        "kept": kept_count(216, 0.4),
    }
    assert "4 layers" in str(info)
    path2 = save_ticket(net, tmp_path / "m.safetensors", metadata={"seed": "1", "acc": "0.9"})
    assert read_ticket_info(path2).metadata == {"seed": "1", "acc": "0.9"}
    with pytest.raises(TypeError, match="str"):
        save_ticket(net, tmp_path / "m.safetensors", metadata={"seed": 1})


def test_vgg9_binarised_ticket_is_16x_smaller(tmp_path: Path) -> None:
    dense = create_model("vgg9")
    buf = io.BytesIO()
    torch.save(dense.state_dict(), buf)
    net = sparsify(dense, 0.4, mode="mp")
    path = save_ticket(net, tmp_path / "vgg9.safetensors")
    ratio = len(buf.getvalue()) / path.stat().st_size
    assert ratio >= 16, ratio
    # 1 mask bit per weight + 1 sign bit per kept weight: about 1.6 bits per weight
    n = sum(m.weight.numel() for m in net.modules() if isinstance(m, SubnetLayer))
    assert path.stat().st_size < n * 1.65 / 8 + 64_000


# --------------------------------------------------------------------------- errors


def test_no_score_mask_layer() -> None:
    with pytest.raises(SpikeLotteryError, match="no score-mask layer"):
        save_ticket(_small_cnn(), "unused.safetensors")


def test_unwritable_paths(cnn_ticket, tmp_path: Path) -> None:
    net, _ = cnn_ticket
    missing = tmp_path / "no" / "such" / "dir" / "t.safetensors"
    with pytest.raises(OSError, match="no/such/dir"):
        save_ticket(net, missing)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        save_ticket(net, tmp_path)


@pytest.mark.parametrize("where", ["fsync", "serialise"])
def test_save_is_atomic(cnn_ticket, tmp_path: Path, monkeypatch, where: str) -> None:
    net, _ = cnn_ticket
    target = tmp_path / "atomic.safetensors"

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if where == "fsync":
        monkeypatch.setattr(tickets.os, "fsync", boom)
    else:
        monkeypatch.setattr(safetensors.torch, "save", boom)
    with pytest.raises(OSError, match="No space left"):
        save_ticket(net, target)
    assert not target.exists()
    target.write_bytes(b"old ticket")
    with pytest.raises(OSError, match="No space left"):
        save_ticket(net, target)
    assert target.read_bytes() == b"old ticket"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.safetensors", "cnn.safetensors"]


@pytest.mark.parametrize("cut", [0, 5, 9, 200, -3])
def test_truncated_file(cnn_ticket, tmp_path: Path, cut: int) -> None:
    _, path = cnn_ticket
    data = path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:cut])
    model = _small_cnn()
    before = _state_copy(model)
    with pytest.raises(SpikeLotteryError, match="truncated|not a safetensors|only"):
        load_ticket(model, bad)
    _assert_untouched(model, before)


def test_corrupted_tensor_data_is_caught_by_checksum(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(SpikeLotteryError, match="SHA-256"):
        load_ticket(_small_cnn(), bad)


def test_corrupted_header(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    data = bytearray(path.read_bytes())
    data[20] = ord("}")  # breaks the JSON header
    bad = tmp_path / "head.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(SpikeLotteryError, match="not valid JSON|malformed|corrupted"):
        read_ticket_info(bad)


def _rewrite(path: Path, out: Path, *, reseal: bool = True, **meta_changes: str) -> Path:
    """Copy a ticket with changed metadata; ``reseal`` recomputes the checksum (a forgery)."""
    with safetensors.safe_open(path, "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(meta_changes)
    if reseal:
        meta["sha256"] = tickets._digest(tensors, meta)
    out.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    return out


def test_edited_metadata_is_caught_by_checksum(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    bad = _rewrite(path, tmp_path / "edit.safetensors", reseal=False, pa="0.5")
    with pytest.raises(SpikeLotteryError, match="SHA-256"):
        read_ticket_info(bad)


def test_other_format_version(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    bad = _rewrite(path, tmp_path / "v99.safetensors", format_version="99")
    with pytest.raises(SpikeLotteryError, match="format version '99'.*reads format version"):
        load_ticket(_small_cnn(), bad)


def test_plain_safetensors_is_not_a_ticket(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(_small_cnn().state_dict(), plain)
    with pytest.raises(SpikeLotteryError, match="format=None"):
        load_ticket(_small_cnn(), plain)


def test_inconsistent_mask_is_refused(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    layers = read_ticket_info(path).layers
    layers[0]["pa"] = 0.5  # the stored mask keeps the count of pa=0.4
    bad = _rewrite(path, tmp_path / "pa.safetensors", layers=json.dumps(layers))
    with pytest.raises(SpikeLotteryError, match="mask of layer '0' keeps"):
        load_ticket(_small_cnn(), bad)


class _Evil:
    """Unpickling this creates a marker file: proof that a payload would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payloads_are_refused_never_run(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe)))
    assert probe.exists()  # the payload works when unpickled...

    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    zipped = tmp_path / "torchsave.safetensors"
    torch.save({"x": _Evil(marker)}, zipped)
    legacy = tmp_path / "legacy.safetensors"
    torch.save({"x": _Evil(marker)}, legacy, _use_new_zipfile_serialization=False)
    for path, what in ((raw, "pickle"), (zipped, "zip archive"), (legacy, "pickle")):
        model = _small_cnn()
        before = _state_copy(model)
        with pytest.raises(SpikeLotteryError, match=what):
            load_ticket(model, path)
        with pytest.raises(SpikeLotteryError, match="never unpickle"):
            read_ticket_info(path)
        _assert_untouched(model, before)
    assert not marker.exists()  # ...and was never run by spikelottery


def test_missing_layer(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = _small_cnn()[:7]  # lacks the linear layers "7" and "9"
    before = _state_copy(model)
    with pytest.raises(SpikeLotteryError, match=r"layer '7' \(Linear with weight \(16, 32\)\)"):
        load_ticket(model, path)
    _assert_untouched(model, before)


def test_extra_layer(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = _small_cnn()
    model.append(nn.Linear(5, 3))
    before = _state_copy(model)
    with pytest.raises(SpikeLotteryError, match=r"model has tensors the ticket lacks: '10.bias'"):
        load_ticket(model, path)
    _assert_untouched(model, before)
    with pytest.warns(UserWarning, match="skipped"):
        load_ticket(model, path, strict=False)
    assert isinstance(model[9], SubnetLayer) and type(model[10]) is nn.Linear


def test_extra_score_mask_layer(cnn_ticket, tmp_path: Path) -> None:
    net = sparsify(_small_cnn(), 0.5, filter=nn.Conv2d)
    path = save_ticket(net, tmp_path / "convs.safetensors")
    fully = sparsify(_small_cnn(), 0.5)
    with pytest.raises(
        SpikeLotteryError, match="score-mask layers that the ticket .* lacks: '7', '9'"
    ):
        load_ticket(fully, path)


def test_wrongly_shaped_layer(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = _small_cnn()
    model[3] = nn.Conv2d(8, 8, 5, padding=2, bias=False)
    before = _state_copy(model)
    with pytest.raises(SpikeLotteryError, match=r"'3' is a Conv2d with weight \(8, 8, 5, 5\)"):
        load_ticket(model, path)
    _assert_untouched(model, before)
    model = _small_cnn()
    model[1] = nn.BatchNorm2d(8, affine=False)
    with pytest.raises(SpikeLotteryError, match="'1.weight'"):
        load_ticket(model, path)


def test_wrong_layer_type(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = _small_cnn()
    model[3] = nn.Identity()
    with pytest.raises(SpikeLotteryError, match="layer '3'"):
        load_ticket(model, path)


# --------------------------------------------------------------------------- export


def test_export_dense_loads_strictly_into_the_original_architecture(cnn_ticket) -> None:
    net, _ = cnn_ticket
    dense = export_dense(net)
    assert isinstance(net[0], SubnetLayer)  # the original is not changed
    assert not any(isinstance(m, SubnetLayer) for m in dense.modules())
    plain = _small_cnn().eval()
    plain.load_state_dict(dense.state_dict(), strict=True)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain(x), net(x))


def test_export_dense_removes_patch_selector() -> None:
    kwargs = {"img_size": 16, **_FAST}
    net = sparsify(
        create_model("spikformer_micro", **kwargs).eval(), 0.4, 0.5, filter="patch_embed"
    )
    dense = export_dense(net)
    assert not any(isinstance(m, (PatchSelector, SubnetLayer)) for m in dense.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in dense.modules())
    assert isinstance(net.patch_embed.patch_selector, PatchSelector)  # original keeps it
    plain = create_model("spikformer_micro", **kwargs).eval()
    plain.load_state_dict(dense.state_dict(), strict=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(_out(dense, x), _out(plain, x))
    sparsify(net, 0.4, 0.0, filter="patch_embed")  # no patch pruning: same network
    assert torch.equal(_out(dense, x), _out(net, x))


def test_export_onnx(cnn_ticket, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    net, _ = cnn_ticket
    x = torch.randn(2, 3, 8, 8)
    path = export_onnx(net, tmp_path / "cnn.onnx", x, dynamo=False, input_names=["x"])
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    from onnx.reference import ReferenceEvaluator

    (y,) = ReferenceEvaluator(proto).run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), net(x), rtol=1e-4, atol=1e-5)
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y2,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y2), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_export_onnx_spiking_model(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    # The default LIF backend: export_onnx must trace the eager loop, not the fused kernel.
    net = sparsify(create_model("vgg_tiny", img_size=8, timesteps=2).eval(), 0.4, mode="mp")
    x = torch.rand(1, 3, 8, 8)
    path = export_onnx(net, tmp_path / "vgg.onnx", x, input_names=["x"])
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (y,) = ReferenceEvaluator(proto).run(None, {"x": x.numpy()})
    reference = export_dense(net)
    for module in reference.modules():
        if hasattr(module, "backend"):
            module.backend = "eager"  # same semantics, no compilation in the test
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), reference(x), rtol=1e-4, atol=1e-5)


def test_header_length_field_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", 10_000) + b'{"a":')
    with pytest.raises(SpikeLotteryError, match="truncated"):
        read_ticket_info(bad)
