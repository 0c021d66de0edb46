"""Saving and loading tickets: round trips, sizes, options, and models that do not fit."""

from __future__ import annotations

import errno
import io
import os
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import Tensor, nn

from _disk_testing import fill_disk
from _ticket_testing import (
    FAST,
    assert_same_ticket,
    assert_untouched,
    outputs,
    randomise_state,
    rewrite_ticket,
    save_cnn_ticket,
    small_cnn,
    state_copy,
)
from spikelottery import SpikeLotteryError, sparsify
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.models import create_model
from spikelottery.patch import PatchSelector
from spikelottery.tickets import FORMAT_VERSION, load_ticket, read_ticket_info, save_ticket


@pytest.fixture
def cnn_ticket(tmp_path: Path) -> tuple[nn.Module, Path]:
    return save_cnn_ticket(tmp_path)


# --------------------------------------------------------------------------- round trips


def test_user_model_round_trip_onto_fresh_dense_model(cnn_ticket, tmp_path: Path) -> None:
    net, path = cnn_ticket
    x = torch.randn(4, 3, 8, 8)
    fresh = small_cnn().eval()
    rng = torch.get_rng_state()
    assert load_ticket(fresh, path) is fresh
    assert torch.equal(torch.get_rng_state(), rng)  # loading draws no random numbers
    assert_same_ticket(net, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))
    assert [fresh[i].mode for i in (0, 3, 7, 9)] == ["mp", "mp", "lt", "mp"]
    assert fresh[3].pa == 0.6 and fresh[0].pa == 0.4
    # BatchNorm statistics and biases are part of the ticket
    assert torch.equal(fresh[1].running_var, net[1].running_var)
    assert torch.equal(fresh[0].bias, net[0].bias)


def test_round_trip_onto_sparsified_model(cnn_ticket) -> None:
    net, path = cnn_ticket
    other = sparsify(small_cnn().eval(), 0.8, mode="lt")  # other pa, mode and random weights
    load_ticket(other, path)
    assert_same_ticket(net, other)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(other(x), net(x))


def test_partly_sparsified_model_and_dense_layers_as_state(tmp_path: Path) -> None:
    net = randomise_state(small_cnn()).eval()
    sparsify(net, 0.5, mode="mp", filter=nn.Conv2d)  # linear layers stay dense
    path = save_ticket(net, tmp_path / "t.safetensors")
    info = read_ticket_info(path)
    assert [layer["name"] for layer in info.layers] == ["0", "3"]
    fresh = load_ticket(small_cnn().eval(), path)
    assert type(fresh[7]) is nn.Linear and torch.equal(fresh[7].weight, net[7].weight)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "mode"),
    [
        ("vgg_tiny", {"img_size": 8, **FAST}, "mp"),
        ("resnet_tiny", {"img_size": 8, **FAST}, "lt"),
        ("spikformer_micro", {"img_size": 16, **FAST}, "mp"),
    ],
)
def test_zoo_round_trip(name: str, kwargs: dict, mode: str, tmp_path: Path) -> None:
    net = randomise_state(create_model(name, **kwargs)).eval()
    sparsify(net, 0.4, mode=mode)
    path = save_ticket(net, tmp_path / f"{name}.safetensors")
    fresh = load_ticket(randomise_state(create_model(name, **kwargs)).eval(), path)
    assert_same_ticket(net, fresh)
    x = torch.rand(2, 3, kwargs["img_size"], kwargs["img_size"])
    assert torch.equal(outputs(fresh, x), outputs(net, x))


def test_multisp_patch_embed_only_with_patch_pruning(tmp_path: Path) -> None:
    """The paper's MultiSp: mp ticket in the ConvPEP, patch pruning, dense transformer."""
    kwargs = {"img_size": 16, **FAST}
    net = randomise_state(create_model("spikformer_micro", **kwargs)).eval()
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
        assert_same_ticket(net, target)
        assert type(target.blocks[0].mlp.fc1.linear) is nn.Linear
        assert torch.equal(outputs(target, x), outputs(net, x))
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

    net = sparsify(randomise_state(build()), 0.5, mode="mp")
    assert isinstance(net[0], layer.Conv2d)
    path = save_ticket(net, tmp_path / "sj.safetensors")
    fresh = load_ticket(build(), path)
    assert isinstance(fresh[0], layer.Conv2d) and isinstance(fresh[0], SubnetLayer)
    assert_same_ticket(net, fresh)
    x = (torch.rand(4, 3, 2, 6, 6) < 0.5).float()  # [T, B, C, H, W] events
    with torch.no_grad():
        y = net(x)
        functional.reset_net(net)
        assert y.shape == (4, 3, 4)
        assert torch.equal(fresh(x), y)
        functional.reset_net(fresh)


def test_scores_and_half_weights_options(tmp_path: Path) -> None:
    net = sparsify(small_cnn().eval(), 0.5, mode="lt")
    full = save_ticket(net, tmp_path / "full.safetensors")
    half = save_ticket(net, tmp_path / "half.safetensors", weight_dtype="float16")
    scored = save_ticket(net, tmp_path / "scores.safetensors", include_scores=True)
    assert half.stat().st_size < full.stat().st_size
    with safetensors.safe_open(half, "pt") as f:
        assert f.get_tensor("weight/0").dtype == torch.float16
    a = load_ticket(small_cnn().eval(), half)
    for i in (0, 3, 7, 9):
        assert torch.equal(a[i].mask(), net[i].mask())
        torch.testing.assert_close(
            a[i].effective_weight(), net[i].effective_weight(), rtol=1e-3, atol=1e-4
        )
    b = load_ticket(small_cnn().eval(), scored)
    assert read_ticket_info(scored).include_scores
    for i in (0, 3, 7, 9):
        assert torch.equal(b[i].scores, net[i].scores)
    c = load_ticket(small_cnn().eval(), full)
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
        save_ticket(small_cnn(), "unused.safetensors")


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
        monkeypatch.setattr(os, "fsync", boom)
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


def test_missing_layer(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = small_cnn()[:7]  # lacks the linear layers "7" and "9"
    before = state_copy(model)
    with pytest.raises(SpikeLotteryError, match=r"layer '7' \(Linear with weight \(16, 32\)\)"):
        load_ticket(model, path)
    assert_untouched(model, before)


def test_extra_layer(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = small_cnn()
    model.append(nn.Linear(5, 3))
    before = state_copy(model)
    with pytest.raises(SpikeLotteryError, match=r"model has tensors the ticket lacks: '10.bias'"):
        load_ticket(model, path)
    assert_untouched(model, before)
    with pytest.warns(UserWarning, match="skipped"):
        load_ticket(model, path, strict=False)
    assert isinstance(model[9], SubnetLayer) and type(model[10]) is nn.Linear


def test_extra_score_mask_layer(cnn_ticket, tmp_path: Path) -> None:
    net = sparsify(small_cnn(), 0.5, filter=nn.Conv2d)
    path = save_ticket(net, tmp_path / "convs.safetensors")
    fully = sparsify(small_cnn(), 0.5)
    with pytest.raises(
        SpikeLotteryError, match="score-mask layers that the ticket .* lacks: '7', '9'"
    ):
        load_ticket(fully, path)


def test_wrongly_shaped_layer(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = small_cnn()
    model[3] = nn.Conv2d(8, 8, 5, padding=2, bias=False)
    before = state_copy(model)
    with pytest.raises(SpikeLotteryError, match=r"'3' is a Conv2d with weight \(8, 8, 5, 5\)"):
        load_ticket(model, path)
    assert_untouched(model, before)
    model = small_cnn()
    model[1] = nn.BatchNorm2d(8, affine=False)
    with pytest.raises(SpikeLotteryError, match="'1.weight'"):
        load_ticket(model, path)


def test_wrong_layer_type(cnn_ticket) -> None:
    _, path = cnn_ticket
    model = small_cnn()
    model[3] = nn.Identity()
    with pytest.raises(SpikeLotteryError, match="layer '3'"):
        load_ticket(model, path)


# --- from test_review_cases.py: Regression tests for defects an independent review found on third-party networks.


def test_d7_versioned_state_dicts_load_tickets(tmp_path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = sparsify(torchvision.models.mnasnet0_5(num_classes=4), 0.5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    path = save_ticket(model, tmp_path / "m.safetensors")
    fresh = load_ticket(torchvision.models.mnasnet0_5(num_classes=4), path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), want)


def test_r2_grid_layout_tickets_load(tmp_path) -> None:
    pytest.importorskip("timm")
    from timm.layers import PatchEmbed

    from spikelottery.patch import attach_patch_selector

    class GridNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = PatchEmbed(32, 8, 3, 16, flatten=False)
            self.head = nn.Linear(16, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.patch_embed(x).flatten(2).mean(2))

    torch.manual_seed(0)
    model = sparsify(GridNet().eval(), 0.5)
    attach_patch_selector(model, 0.5, layout="grid")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    path = save_ticket(model, tmp_path / "g.safetensors")
    fresh = load_ticket(GridNet().eval(), path)
    with torch.no_grad():
        assert torch.equal(fresh(x), want)


# --- from test_bad_inputs_files.py: Bad files and failed writes: tickets, checkpoints, ONNX export and the atomic writers.


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_disk_full_error(err: pytest.ExceptionInfo[OSError], path: Path) -> None:
    assert err.value.errno == errno.ENOSPC
    assert str(path) in str(err.value) and "space" in str(err.value)


def test_save_ticket_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, path = save_cnn_ticket(tmp_path)
    before = _files(tmp_path)
    fill_disk(monkeypatch, 100)
    with pytest.raises(OSError) as err:
        save_ticket(net, path)
    _assert_disk_full_error(err, path)
    assert _files(tmp_path) == before


def _refused_load(path: Path, match: str) -> None:
    """``load_ticket`` and ``read_ticket_info`` refuse ``path``; model and file unchanged."""
    data = path.read_bytes()
    model = small_cnn()
    before = state_copy(model)
    with pytest.raises(SpikeLotteryError, match=match) as err:
        load_ticket(model, path)
    assert str(path) in str(err.value)
    assert_untouched(model, before)
    with pytest.raises(SpikeLotteryError, match=match):
        read_ticket_info(path)
    assert path.read_bytes() == data


RESIGNED = {
    "pa": ({"pa": "0.6"}, r"pa=0\.6 but its layers' pa is mostly 0\.4"),
    "mode": ({"mode": "lt"}, "mode='lt' but its layers' mode is mostly 'mp'"),
    "both": ({"pa": "0.0", "mode": "lt"}, r"pa=0\.0 .* and mode='lt'"),
}


@pytest.mark.parametrize(("changes", "match"), RESIGNED.values(), ids=RESIGNED.keys())
def test_resigned_header_that_disagrees_with_its_layers(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, changes: dict[str, str], match: str
) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "resigned.safetensors", **changes)
    _refused_load(bad, match)


def _with_header_key(path: Path, out: Path, key: str, value: str) -> Path:
    """``path`` with one more top-level header entry, spliced in as raw JSON text."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + n].rstrip()
    assert header.endswith(b"}")
    new = header[:-1] + f',"{key}":{value}}}'.encode()
    out.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n :])
    return out


@pytest.mark.parametrize("depth", [17, 100_000], ids=["past-the-bound", "past-python-recursion"])
def test_deeply_nested_header_json(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, depth: int
) -> None:
    _, path = cnn_ticket
    bad = _with_header_key(path, tmp_path / "deep.safetensors", "x", "[" * depth + "]" * depth)
    _refused_load(bad, "header nests JSON more than 16 levels deep")


@pytest.mark.parametrize("depth", [17, 100_000], ids=["past-the-bound", "past-python-recursion"])
def test_deeply_nested_layer_table(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, depth: int
) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "deep.safetensors", layers="[" * depth + "]" * depth)
    _refused_load(bad, "valid spikelottery ticket: its layer table nests JSON more than 16 levels")


def test_header_json_with_a_huge_integer(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    _, path = cnn_ticket
    bad = _with_header_key(path, tmp_path / "huge.safetensors", "x", "1" * 5000)
    _refused_load(bad, "header is not valid JSON")


@pytest.mark.parametrize("table", ['{"0": 1}', "[1, 2]", '"text"'], ids=["object", "ints", "str"])
def test_layer_table_of_the_wrong_type(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, table: str
) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "table.safetensors", layers=table)
    _refused_load(bad, "layer table are malformed")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_save_ticket_with_non_finite_scores_writes_nothing(
    cnn_ticket: tuple[nn.Module, Path], value: float
) -> None:
    net, path = cnn_ticket
    before = _files(path.parent)
    with torch.no_grad():
        net[3].scores[0, 0, 0, 0] = value
    state = state_copy(net)
    with pytest.raises(SpikeLotteryError, match=r"layer '3' has no valid mask.*NaN or infinite"):
        save_ticket(net, path)
    assert _files(path.parent) == before  # the saved ticket is intact, nothing else written
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, equal_nan=True)
    assert read_ticket_info(path).layers[1]["name"] == "3"  # and still loads
