"""Networks that read their weights in every way real code does, for the sparsify tests.

Each entry builds a fresh, deterministic dense network and a small input. Half of them are
third-party code (torchvision, timm, SpikingJelly), built at random init and small sizes;
the others are minimal reproductions of the patterns issue 9 found in real code:

1. a subclass whose own forward reads ``self.weight`` (weight standardisation, "same" pad);
2. a parent that passes ``child.weight`` to a functional op (fused qkv, windowed attention,
   ``nn.MultiheadAttention.out_proj``);
3. one module registered twice (weight sharing by reuse);
4. weights tied between two linear layers;
5. PyTorch's fused inference path (``TransformerEncoderLayer`` in eval under no_grad).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Net:
    name: str
    build: Callable[[], nn.Module]
    example: Callable[[], Tensor]
    requires: str | None = None  # the optional package the network comes from


def _seeded(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(1234)
        return fn()

    return build


def _images(c: int = 3, size: int = 32, b: int = 2) -> Callable[[], Tensor]:
    return lambda: torch.randn(b, c, size, size, generator=torch.Generator().manual_seed(7))


# -- 1. subclasses whose forward reads self.weight ---------------------------------------


class WSConv2d(nn.Conv2d):
    """Weight-standardised conv (as in BiT / NF-nets): normalises self.weight in forward."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SamePadConv2d(nn.Conv2d):
    """TF-style "same" padding computed in forward, then F.conv2d on self.weight."""

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        x = F.pad(x, [(kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ScaledLinear(nn.Linear):
    """A library's own Linear: scales self.weight by a fixed gain in forward."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * 0.5, self.bias)


def subclass_net() -> nn.Module:
    return nn.Sequential(
        WSConv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        SamePadConv2d(8, 8, 4, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        ScaledLinear(32, 10),
    )


# -- 2. parents that read child.weight ---------------------------------------------------


class FusedQKVAttention(nn.Module):
    """Reads qkv.weight and proj.weight itself, never calls the children."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias).view(b, n, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return F.linear(out, self.proj.weight, self.proj.bias)


class ParentReadsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = FusedQKVAttention()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.attn(self.embed(x))
        h = self.mha(h, h, h, need_weights=False)[0]
        return self.head(h.mean(1))


# -- 3./4. shared and tied -----------------------------------------------------------


class SharedNet(nn.Module):
    """One Linear registered twice (under two names) and applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.block = nn.Linear(16, 16)
        self.again = self.block
        self.out = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.block(torch.relu(self.inp(x))))
        return self.out(torch.relu(self.again(h)))


class TiedLinearNet(nn.Module):
    """An encoder and a decoder sharing one weight matrix (the decoder uses it transposed)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(12, 12)
        self.dec = nn.Linear(12, 12)
        self.dec.weight = self.enc.weight
        self.head = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.dec(torch.tanh(self.enc(x)))))


class TiedEmbeddingLM(nn.Module):
    """An embedding and an output head that share one tensor (GPT-style weight tying)."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return self.lm_head(torch.relu(self.mix(self.emb(tokens))))


# -- 5. fused inference path ---------------------------------------------------------


def transformer_encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.Sequential(
        nn.Linear(8, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    )


# -- third-party networks ------------------------------------------------------------


def tv_resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def tv_mobilenet() -> nn.Module:
    import torchvision

    return torchvision.models.mobilenet_v3_small(num_classes=10)


def tv_vit() -> nn.Module:
    import torchvision

    return torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    )


def tv_swin() -> nn.Module:
    import torchvision

    return torchvision.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 2],
        window_size=[4, 4],
        num_classes=10,
    )


def timm_vit() -> nn.Module:
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        num_classes=10,
    )


def timm_convnext() -> nn.Module:
    import timm

    return timm.create_model("convnext_atto", pretrained=False, num_classes=10)


def timm_stdconv() -> nn.Module:
    from timm.layers import StdConv2d, StdConv2dSame

    return nn.Sequential(
        StdConv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        StdConv2dSame(8, 8, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def sj_ws_vgg() -> nn.Module:
    """SpikingJelly's weight-standardised convs (layer.WSConv2d reads self.weight) with LIF."""
    from spikingjelly.activation_based import functional, layer, neuron

    net = nn.Sequential(
        layer.WSConv2d(3, 8, 3, padding=1),
        neuron.LIFNode(tau=2.0, v_threshold=0.1),
        layer.WSConv2d(8, 8, 3, padding=1),
        neuron.LIFNode(tau=2.0, v_threshold=0.1),
        layer.Flatten(),
        layer.Linear(8 * 8 * 8, 10),
    )
    functional.set_step_mode(net, "m")
    return net


def sj_spiking_resnet() -> nn.Module:
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_resnet

    # A low threshold keeps all 18 layers spiking at random init, so every mask matters.
    net = spiking_resnet.spiking_resnet18(
        spiking_neuron=neuron.IFNode, num_classes=10, v_threshold=0.25
    )
    functional.set_step_mode(net, "m")
    return net


def _spikes(t: int, c: int, size: int) -> Callable[[], Tensor]:
    g = torch.Generator().manual_seed(3)
    return lambda: (torch.rand(t, 2, c, size, size, generator=g) > 0.5).float()


NETWORKS: list[Net] = [
    Net("subclass_forward", _seeded(subclass_net), _images(size=16)),
    Net("parent_reads_child", _seeded(ParentReadsNet), lambda: torch.randn(2, 6, 8)),
    Net("shared_module", _seeded(SharedNet), lambda: torch.randn(3, 8)),
    Net("tied_linear", _seeded(TiedLinearNet), lambda: torch.randn(3, 12)),
    Net("transformer_encoder", _seeded(transformer_encoder), lambda: torch.randn(2, 5, 8)),
    Net("torchvision_resnet18", _seeded(tv_resnet18), _images(size=32), "torchvision"),
    Net("torchvision_mobilenet_v3", _seeded(tv_mobilenet), _images(size=32), "torchvision"),
    Net("torchvision_vit", _seeded(tv_vit), _images(size=32), "torchvision"),
    Net("torchvision_swin", _seeded(tv_swin), _images(size=32), "torchvision"),
    Net("timm_vit", _seeded(timm_vit), _images(size=32), "timm"),
    Net("timm_convnext_atto", _seeded(timm_convnext), _images(size=32), "timm"),
    Net("timm_stdconv", _seeded(timm_stdconv), _images(size=16), "timm"),
    Net("spikingjelly_ws_vgg", _seeded(sj_ws_vgg), _spikes(2, 3, 8), "spikingjelly"),
    Net(
        "spikingjelly_spiking_resnet18",
        _seeded(sj_spiking_resnet),
        _spikes(2, 3, 32),
        "spikingjelly",
    ),
]
