"""Exporting tickets: dense PyTorch copies and ONNX."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from torch import nn

from _disk_testing import fill_disk
from _ticket_testing import FAST, outputs, save_cnn_ticket, small_cnn, state_copy
from spikelottery import SpikeLotteryError, sparsify
from spikelottery.layers import SubnetLayer
from spikelottery.models import create_model
from spikelottery.patch import PatchSelector
from spikelottery.tickets import densify, export_dense, export_onnx


@pytest.fixture
def cnn_ticket(tmp_path: Path) -> tuple[nn.Module, Path]:
    return save_cnn_ticket(tmp_path)


# --------------------------------------------------------------------------- export


def test_densify_copy_loads_strictly_into_the_original_architecture(cnn_ticket) -> None:
    net, _ = cnn_ticket
    dense = densify(net, copy=True, patches="remove")
    assert isinstance(net[0], SubnetLayer)  # the original is not changed
    assert not any(isinstance(m, SubnetLayer) for m in dense.modules())
    plain = small_cnn().eval()
    plain.load_state_dict(dense.state_dict(), strict=True)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain(x), net(x))


def test_densify_copy_removes_patch_selector() -> None:
    kwargs = {"img_size": 16, **FAST}
    net = sparsify(
        create_model("spikformer_micro", **kwargs).eval(), 0.4, 0.5, filter="patch_embed"
    )
    dense = densify(net, copy=True, patches="remove")
    assert not any(isinstance(m, (PatchSelector, SubnetLayer)) for m in dense.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in dense.modules())
    assert isinstance(net.patch_embed.patch_selector, PatchSelector)  # original keeps it
    kept = densify(net, copy=True)  # patches="keep": the copy still prunes patches
    assert isinstance(kept.patch_embed.patch_selector, PatchSelector)
    plain = create_model("spikformer_micro", **kwargs).eval()
    plain.load_state_dict(dense.state_dict(), strict=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(outputs(dense, x), outputs(plain, x))
    sparsify(net, 0.4, 0.0, filter="patch_embed")  # no patch pruning: same network
    assert torch.equal(outputs(dense, x), outputs(net, x))


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
    reference = densify(net, copy=True, patches="remove")
    for module in reference.modules():
        if hasattr(module, "backend"):
            module.backend = "eager"  # same semantics, no compilation in the test
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), reference(x), rtol=1e-4, atol=1e-5)


def test_densify_flags_say_how_copy_and_in_place_differ() -> None:
    torch.manual_seed(0)
    net = sparsify(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)), pa=0.5)
    copy = densify(net, copy=True)
    assert type(net[0]).__name__ == "SubnetLinear"  # the original is untouched
    assert type(copy[0]) is nn.Linear
    layer = densify(net[0], copy=True)
    assert type(layer) is nn.Linear and torch.equal(layer.weight, copy[0].weight)
    with pytest.raises(TypeError, match="copy=True"):
        densify(net[0])
    with pytest.raises(ValueError, match="patches must be"):
        densify(net, patches="drop")
    assert densify(net) is net and type(net[0]) is nn.Linear  # in place


def test_export_dense_is_deprecated_for_densify_copy() -> None:
    net = sparsify(nn.Sequential(nn.Linear(8, 2)), pa=0.5)
    with pytest.warns(FutureWarning, match=r"densify\(model, copy=True, patches='remove'\)"):
        old = export_dense(net)
    new = densify(net, copy=True, patches="remove")
    assert all(torch.equal(old.state_dict()[k], v) for k, v in new.state_dict().items())


@pytest.mark.parametrize("shape", [(2, 5), (2, 3, 8)])
def test_export_onnx_names_a_wrong_example_input(tmp_path: Path, shape: tuple[int, ...]) -> None:
    pytest.importorskip("onnx")
    net = sparsify(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2)), pa=0.5)
    with pytest.raises(SpikeLotteryError, match=r"example_input \(tensor of shape \[2,"):
        export_onnx(net, tmp_path / "x.onnx", torch.rand(*shape), dynamo=False)
    assert not (tmp_path / "x.onnx").exists()


# --- from test_bad_inputs_files.py: Bad files and failed writes: tickets, checkpoints, ONNX export and the atomic writers.


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_disk_full_error(err: pytest.ExceptionInfo[OSError], path: Path) -> None:
    assert err.value.errno == errno.ENOSPC
    assert str(path) in str(err.value) and "space" in str(err.value)


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "replaces-a-file"])
def test_export_onnx_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    pytest.importorskip("onnx")
    net, _ = save_cnn_ticket(tmp_path)
    (tmp_path / "cnn.safetensors").unlink()
    path = tmp_path / "cnn.onnx"
    if existing:
        path.write_bytes(b"an older export")
    before, state = _files(tmp_path), state_copy(net)
    fill_disk(monkeypatch, 0)
    with pytest.raises(OSError) as err:
        export_onnx(net, path, torch.rand(1, 3, 8, 8), dynamo=False)
    _assert_disk_full_error(err, path)
    assert _files(tmp_path) == before  # no 0-byte file, no temporary
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_export_onnx_into_a_missing_folder(tmp_path: Path) -> None:
    net, _ = save_cnn_ticket(tmp_path)
    before = _files(tmp_path)
    path = tmp_path / "missing" / "cnn.onnx"
    with pytest.raises(FileNotFoundError, match="missing/cnn.onnx"):
        export_onnx(net, path, torch.rand(1, 3, 8, 8), dynamo=False)
    assert _files(tmp_path) == before
