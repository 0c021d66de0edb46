"""Third-party models with the newly masked layer kinds: every swapped layer uses its ticket.

torchvision's VisionTransformer (``nn.MultiheadAttention``) and video ``r3d_18``
(``nn.Conv3d``), timm's Sequencer (bidirectional ``nn.LSTM``) and LambdaResNet
(``nn.Conv3d`` inside the lambda layer), PyTorch's ``nn.Transformer`` and an LSTM
language model. Each is sparsified with ``example_inputs`` (``check_ticket``: every
layer gets a gradient, its mask matters, the densified copy agrees), then every masked
tensor of every swapped layer gets noise in its masked-out entries, which must leave the
output unchanged in training and in eval under ``no_grad`` (PyTorch's fused paths).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from spikelottery import densify, sparsify
from spikelottery.layers import SubnetLayer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("error:check_ticket")]


def _outputs(model: nn.Module, args: tuple[Any, ...]) -> Tensor:
    out = model(*args)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _check_every_layer_uses_its_ticket(
    model: nn.Module, args: tuple[Any, ...], kinds: tuple[type[nn.Module], ...]
) -> None:
    _, report = sparsify(model, 0.5, return_report=True, example_inputs=args)
    swapped = [m for m in model.modules() if isinstance(m, SubnetLayer)]
    assert len(swapped) == len(report.swapped) > 0
    for kind in kinds:  # the newly masked kinds are swapped, not left dense
        assert any(isinstance(m, kind) for m in swapped), kind
        assert not any(type(m) is kind for m in model.modules()), kind
    assert not [n for n, why in report.skipped.items() if "not a layer type" in why]
    model.eval()
    with torch.no_grad():
        before = _outputs(model, args)
        dense = densify(copy.deepcopy(model))
        torch.testing.assert_close(_outputs(dense, args), before, rtol=1e-4, atol=1e-5)
        for layer in swapped:
            for name in layer.masked_names:
                weight, mask = layer.frozen_of(name), layer.mask(name)
                weight[~mask] += torch.randn_like(weight)[~mask] * 10
        assert torch.equal(_outputs(model, args), before)
    model.train()
    torch.manual_seed(1)
    trained = _outputs(model, args)
    assert trained.isfinite().all()


def test_torchvision_vision_transformer_attention() -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    )
    _check_every_layer_uses_its_ticket(vit, (torch.randn(2, 3, 32, 32),), (nn.MultiheadAttention,))
    assert all(
        isinstance(block.self_attention, SubnetLayer)
        for block in vit.encoder.layers  # type: ignore[union-attr]
    )


def test_torchvision_video_r3d_18() -> None:
    from torchvision.models.video import r3d_18

    net = r3d_18(num_classes=4)
    _check_every_layer_uses_its_ticket(net, (torch.randn(1, 3, 4, 32, 32),), (nn.Conv3d,))


def test_timm_sequencer_bidirectional_lstm() -> None:
    from timm.models.sequencer import Sequencer2d

    net = Sequencer2d(
        num_classes=5,
        img_size=32,
        layers=(1, 1, 1, 1),
        patch_sizes=(4, 2, 1, 1),
        embed_dims=(16, 16, 16, 16),
        hidden_sizes=(8, 8, 8, 8),
    )
    _check_every_layer_uses_its_ticket(net, (torch.randn(2, 3, 32, 32),), (nn.LSTM,))


def test_timm_lambda_resnet_conv3d() -> None:
    import timm

    # zero_init_last=False: residual branches that start at zero would not be verified
    net = timm.create_model("lambda_resnet26t", num_classes=4, zero_init_last=False)
    _check_every_layer_uses_its_ticket(net, (torch.randn(1, 3, 64, 64),), (nn.Conv3d,))


def test_pytorch_transformer() -> None:
    net = nn.Transformer(
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=1,
        dim_feedforward=32,
        batch_first=True,
    )
    args = (torch.randn(2, 5, 16), torch.randn(2, 4, 16))
    _check_every_layer_uses_its_ticket(net, args, (nn.MultiheadAttention,))


class _LanguageModel(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.LSTM(dim, dim, num_layers=2, dropout=0.1, batch_first=True)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        y = self.rnn(self.embed(tokens))[0]
        return self.head(self.gru(y)[0])


def test_lstm_language_model() -> None:
    make: Callable[[], nn.Module] = _LanguageModel
    _check_every_layer_uses_its_ticket(make(), (torch.randint(0, 20, (3, 7)),), (nn.LSTM, nn.GRU))
