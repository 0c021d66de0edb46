"""PyTorch's program transforms on sparsified models: torch.func, torch.fx, fuse_modules.

``torch.func.vmap`` (ensembles, per-sample gradients) and ``torch.fx`` (symbolic
tracing, torchvision's ``create_feature_extractor``) work on score-mask layers and
compute with the ticket; what cannot work is refused with a named error.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from spikelottery import SpikeLotteryError, SubnetConv, densify, sparsify
from spikelottery.layers import SubnetConv1d


def _cnn(mode: str = "lt") -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )
    return sparsify(net, 0.5, mode=mode)


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_vmap_over_an_ensemble_of_tickets(mode: str) -> None:
    models = [_cnn(mode) for _ in range(3)]
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(5, 3, 6, 6)

    def run(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    out = vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    for i, model in enumerate(models):
        torch.testing.assert_close(out[i], model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_per_sample_score_gradients(mode: str) -> None:
    net = _cnn(mode)
    x = torch.randn(4, 3, 6, 6)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(net, p, (xi[None],)).pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i in range(2):
        net.zero_grad()
        net(x[i : i + 1]).pow(2).sum().backward()
        for name in ("0.scores", "4.scores"):
            torch.testing.assert_close(per_sample[name][i], net.get_submodule(name[0]).scores.grad)


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_vmap_over_attention_tickets() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    models = [sparsify(Net(), 0.5) for _ in range(2)]
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(5, 2, 8)
    out = vmap(lambda p, b: functional_call(base, (p, b), (x,)))(params, buffers)
    for i, model in enumerate(models):
        torch.testing.assert_close(out[i], model(x), rtol=1e-5, atol=1e-6)


def test_vmap_over_recurrent_layers_fails_in_pytorch_itself() -> None:
    # torch has no batching rule for its fused recurrent kernels (aten::gru.input): a
    # dense GRU fails the same way, so this is not the ticket's doing.
    x = torch.randn(4, 1, 3)
    for net in (nn.GRU(3, 2), sparsify(nn.Sequential(nn.GRU(3, 2)), 0.5)[0]):
        params = {k: v.detach()[None].expand(2, *v.shape) for k, v in net.named_parameters()}
        with pytest.raises(RuntimeError, match="Batching rule not implemented"):
            vmap(lambda p, net=net: functional_call(net, p, (x,))[0])(params)


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_fx_trace_computes_with_the_ticket_and_keeps_training(mode: str) -> None:
    net = _cnn(mode)
    x = torch.randn(5, 3, 6, 6)
    traced = torch.fx.symbolic_trace(net)
    assert torch.equal(traced(x), net(x))
    # The graph reads the frozen weights and the scores, never a snapshot of the mask.
    assert {"0.scores", "0.frozen_weight", "4.scores", "4.frozen_weight"} <= set(
        dict(traced.named_parameters())
    )
    opt = torch.optim.SGD([p for n, p in traced.named_parameters() if "scores" in n], lr=1.0)
    traced(x).pow(2).sum().backward()
    opt.step()
    with torch.no_grad():
        net[0].scores.copy_(traced.get_submodule("0").scores)
        net[4].scores.copy_(traced.get_submodule("4").scores)
    assert torch.equal(traced(x), net(x))


def test_fx_multistep_conv_and_conv1d() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = SubnetConv(2, 3, 3, padding=1, padding_mode="reflect")
            self.conv1d = SubnetConv1d(3, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x)  # [T, B, C, H, W]
            return self.conv1d(y.flatten(-2))

    net = Net()
    x = torch.randn(4, 2, 2, 5, 5)
    assert torch.equal(torch.fx.symbolic_trace(net)(x), net(x))


def test_create_feature_extractor_on_a_sparsified_torchvision_model() -> None:
    from torchvision.models import resnet18
    from torchvision.models.feature_extraction import create_feature_extractor

    net = sparsify(resnet18(num_classes=4).eval(), 0.5)
    x = torch.randn(1, 3, 32, 32)
    extractor = create_feature_extractor(net, {"layer2": "mid", "fc": "out"})
    with torch.no_grad():
        feats = extractor(x)
        assert torch.equal(feats["out"], net(x))
        dense = densify(copy.deepcopy(net))
        torch.testing.assert_close(
            create_feature_extractor(dense, {"layer2": "mid"})(x)["mid"], feats["mid"]
        )


def test_fx_refuses_attention_and_recurrent_layers_by_name_and_works_as_leaves() -> None:
    from torchvision.models.feature_extraction import create_feature_extractor

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.rnn = nn.LSTM(8, 4, batch_first=True)

        def forward(self, x: Tensor) -> Tensor:
            return self.rnn(self.attn(x, x, x)[0])[0]

    net = sparsify(Net(), 0.5)
    with pytest.raises(SpikeLotteryError, match="leaf_modules"):
        torch.fx.symbolic_trace(net)
    leaves = [type(net.attn), type(net.rnn)]
    extractor = create_feature_extractor(
        net, ["attn", "rnn"], tracer_kwargs={"leaf_modules": leaves}
    )
    x = torch.randn(2, 3, 8)
    assert torch.equal(extractor(x)["rnn"][0], net(x))


def test_fuse_modules_after_sparsify_is_refused_by_name() -> None:
    net = sparsify(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), 0.5).eval()
    with pytest.raises(SpikeLotteryError, match="densify"):
        torch.ao.quantization.fuse_modules(net, [["0", "1", "2"]])
    lin = sparsify(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), 0.5).eval()
    with pytest.raises(SpikeLotteryError, match=r"fuse_modules cannot fuse \(SubnetLinear, ReLU\)"):
        torch.ao.quantization.fuse_modules(lin, [["0", "1"]])
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        expected = net(x)
        fused = torch.ao.quantization.fuse_modules(densify(net), [["0", "1", "2"]])
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("layer", "shape", "expected"),
    [
        (SubnetConv(3, 4, 3), (2, 3), r"\[B, C, H, W\], \[C, H, W\] or \[T, B, C, H, W\].*2-D"),
        (SubnetConv1d(3, 4, 3), (5,), r"\[B, C, L\].*1-D"),
    ],
)
def test_too_few_dimensions_is_named(
    layer: nn.Module, shape: tuple[int, ...], expected: str
) -> None:
    with pytest.raises(RuntimeError, match=expected):
        layer(torch.randn(*shape))


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_torch_compile_traces_the_new_kinds(mode: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(2, 4, 3)
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.rnn = nn.GRU(4, 4, batch_first=True)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x).flatten(2).transpose(1, 2)
            return self.rnn(self.attn(y, y, y, need_weights=False)[0])[0]

    net = sparsify(Net(), 0.5, mode=mode)
    x = torch.randn(2, 2, 4, 4, 4)
    compiled = torch.compile(net, backend="eager")  # dynamo's graph capture, no codegen
    out = compiled(x)
    torch.testing.assert_close(out, net(x), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert all(
        bool(net.get_submodule(m).scores_of(n).grad.abs().sum() > 0)  # type: ignore[operator]
        for m in ("conv", "attn", "rnn")
        for n in net.get_submodule(m).masked_names  # type: ignore[union-attr]
    )
