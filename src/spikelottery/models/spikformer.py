"""Spikformer (the paper's spiking transformers TINY / SMALL) and its ANN twin (a small ViT)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from ..multistep import MultiStep
from ._input import InputSpec
from .blocks import (
    ConvBNAct,
    LinearBNAct,
    SpikingModel,
    check_positive_int,
    make_activation,
    pair,
)

__all__ = [
    "ConvPEP",
    "Spikformer",
    "SpikformerBlock",
    "SpikingMLP",
    "SpikingSelfAttention",
    "default_patch_size",
]

_MAX_POOLS = 4  # one 2x2 max pool per ConvPEP stage at most


def default_patch_size(img_size: int | tuple[int, int]) -> int:
    """The ConvPEP downsampling factor used when none is given.

    The largest power of two (at most 16, one 2x2 max pool per stage) that leaves a token
    grid of at least 8x8: 32x32 -> 4 (8x8 = 64 tokens, as in Spikformer), 48x48 -> 4
    (12x12 = 144), 64x64 -> 8 (8x8), 128x128 -> 16 (8x8 = 64), 16x16 -> 2, 8x8 -> 1.

    >>> default_patch_size(32), default_patch_size(48), default_patch_size(128)
    (4, 4, 16)
    """
    side = min(pair("img_size", img_size))
    patch = 1
    while patch < 2**_MAX_POOLS and side // (patch * 2) >= 8:
        patch *= 2
    return patch


class ConvPEP(nn.Module):
    """Convolutional patch embedding (Spikformer's SPS), the module the paper sparsifies.

    Four ``conv3x3 -> BN -> LIF`` stages ``C -> D/8 -> D/4 -> D/2 -> D``, a 2x2 max pool
    after each of the last ``log2(patch_size)`` stages (``patch_size=4``: after the 3rd
    and 4th, as in Spikformer for CIFAR), then a relative position embedding
    ``conv3x3(D -> D) -> BN -> LIF`` added back to its input. The result is flattened
    row-major into the token layout ``[T, B, N, D]`` with ``N = (H // p) * (W // p)``;
    the position embedding is already in it.

    Attributes:
        num_patches: ``N`` for the ``img_size`` given at construction.
        grid_size: ``(H // p, W // p)``.

    >>> import torch
    >>> pep = ConvPEP(3, 32, act=nn.ReLU, img_size=32)
    >>> pep.num_patches
    64
    >>> pep(torch.zeros(2, 1, 3, 32, 32)).shape
    torch.Size([2, 1, 64, 32])
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        *,
        act: Callable[[], nn.Module],
        img_size: int | tuple[int, int] = 32,
        patch_size: int | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % 8:
            raise ValueError(
                f"embed_dim must be a multiple of 8 (ConvPEP widths D/8, D/4, D/2), got {embed_dim}"
            )
        height, width = pair("img_size", img_size)
        if patch_size is None:
            patch_size = default_patch_size((height, width))
        pools = check_positive_int("patch_size", patch_size).bit_length() - 1
        if patch_size != 2**pools or pools > _MAX_POOLS:
            raise ValueError(
                f"patch_size must be a power of two from 1 to {2**_MAX_POOLS} (one 2x2 max pool per "
                f"ConvPEP stage), got patch_size={patch_size}"
            )
        if height < patch_size or width < patch_size:
            raise ValueError(f"img_size={img_size!r} is smaller than patch_size={patch_size}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        widths = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        layers: list[nn.Module] = []
        for stage in range(4):
            layers.append(ConvBNAct(widths[stage], widths[stage + 1], act()))
            if stage >= 4 - pools:
                layers.append(MultiStep(nn.MaxPool2d(2)))
        self.proj = nn.Sequential(*layers)
        self.pos = ConvBNAct(embed_dim, embed_dim, act())
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def forward(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W]`` -> tokens ``[T, B, N, D]`` (position embedding added)."""
        x = self.proj(x)
        x = x + self.pos(x)
        return x.flatten(3).transpose(2, 3).contiguous()

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, num_patches={self.num_patches}"


class SpikingSelfAttention(nn.Module):
    """Spiking self-attention (SSA) on tokens ``[T, B, N, D]``, any ``N``.

    Spiking: ``q, k, v = LIF(BN(Linear(x)))``; per head ``LIF_0.5(Q K^T V * scale)`` with
    no softmax (the product of spike matrices is non-negative) and ``scale = 0.125``;
    then ``LIF(BN(Linear(.)))``. ANN twin: ``q, k, v = BN(Linear(x))`` without activation
    (a ReLU before a softmax would discard the scores' sign), ``softmax(Q K^T * scale) V``
    with ``scale = head_dim ** -0.5`` (0.125 for TINY / SMALL), then
    ``ReLU(BN(Linear(.)))``. All linears have no bias (a BatchNorm follows).

    >>> import torch
    >>> attn = SpikingSelfAttention(32, 2, spiking=False, act=nn.ReLU)
    >>> attn(torch.zeros(1, 2, 5, 32)).shape
    torch.Size([1, 2, 5, 32])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        spiking: bool,
        act: Callable[..., nn.Module],
        scale: float | None = None,
        attn_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.spiking = spiking
        head_dim = dim // num_heads
        self.scale = float(scale) if scale is not None else (0.125 if spiking else head_dim**-0.5)
        qkv_act: Callable[[], nn.Module | None] = act if spiking else (lambda: None)
        self.q = LinearBNAct(dim, dim, qkv_act())
        self.k = LinearBNAct(dim, dim, qkv_act())
        self.v = LinearBNAct(dim, dim, qkv_act())
        self.attn_act = act(threshold=attn_threshold) if spiking else nn.Identity()
        self.proj = LinearBNAct(dim, dim, act())

    def _heads(self, x: Tensor) -> Tensor:
        # [T, B, N, D] -> [T, B, H, N, D / H]
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if not self.spiking:
            scores = scores.softmax(dim=-1)
        out = (scores @ v).transpose(-3, -2).flatten(-2)
        return self.proj(self.attn_act(out))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale:g}, softmax={not self.spiking}"


class SpikingMLP(nn.Module):
    """Token-wise MLP ``act(BN(Linear(D -> hD))) -> act(BN(Linear(hD -> D)))`` on ``[T, B, N, D]``."""

    def __init__(self, dim: int, hidden_dim: int, *, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.fc1 = LinearBNAct(dim, hidden_dim, act())
        self.fc2 = LinearBNAct(hidden_dim, dim, act())

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class SpikformerBlock(nn.Module):
    """``x + SSA(x)``, then ``x + MLP(x)``: token-wise, so it runs on any token count."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        spiking: bool,
        act: Callable[..., nn.Module],
        scale: float | None = None,
        attn_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.attn = SpikingSelfAttention(
            dim, num_heads, spiking=spiking, act=act, scale=scale, attn_threshold=attn_threshold
        )
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), act=act)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(SpikingModel):
    """Spikformer: a :class:`ConvPEP` patch embedding, spiking transformer blocks, a linear head.

    The paper's **TINY** (``embed_dim=192, depth=12, num_heads=3``, 5,903,074 parameters)
    and **SMALL** (``embed_dim=384, depth=12, num_heads=6``, 23,521,978 parameters), both
    with MLP ratio 4, 10 classes and RGB input; Table II calls the spiking models
    "Spiking-ViT" and their ANN twins "ViT". At 32x32 the ConvPEP gives 8x8 = 64 tokens.

    After ``patch_embed`` every layer is token-wise (no reshape back to a grid), so a
    patch selector that keeps ``N' < N`` tokens (:func:`~spikelottery.sparsify` with
    ``pb > 0``) needs no other change. The head averages the tokens, applies a linear
    classifier per timestep and averages over T.

    Input and output as for :class:`~spikelottery.models.VGG`; ``spiking=False`` is the
    ANN twin (ReLU, softmax attention, T = 1 for static input).

    Args:
        embed_dim: Token width ``D`` (a multiple of 8 and of ``num_heads``).
        depth: Transformer blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width over ``D``.
        patch_size: ConvPEP downsampling (a power of two up to 16); ``None`` picks
            :func:`default_patch_size` from ``img_size``.
        attn_scale: Attention scale; ``None``: 0.125 (spiking) or ``head_dim ** -0.5`` (ANN).
        attn_threshold: Threshold of the LIF after ``Q K^T V`` (Spikformer: 0.5).
        num_classes: Classes.
        in_channels: Input channels.
        img_size: Input size; sets ``patch_embed.num_patches`` and the default patch size.
        spiking: LIF neurons or the ReLU / softmax twin.
        timesteps: T for direct encoding of static images.
        beta: LIF membrane decay.
        neuron_kwargs: Extra :class:`~spikelottery.neuron.LIFNeuron` arguments.
        time_first: Read 5-D input as ``[T, B, ...]``.

    >>> import torch
    >>> net = Spikformer(embed_dim=32, depth=1, num_heads=2, timesteps=2)
    >>> net(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> net.patch_embed.num_patches
    64
    """

    def __init__(
        self,
        *,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        patch_size: int | None = None,
        attn_scale: float | None = None,
        attn_threshold: float = 0.5,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        spiking: bool = True,
        timesteps: int = 4,
        beta: float = 0.99,
        neuron_kwargs: Mapping[str, Any] | None = None,
        time_first: bool = False,
    ) -> None:
        super().__init__(
            spiking=spiking,
            in_channels=in_channels,
            num_classes=num_classes,
            timesteps=timesteps,
            beta=beta,
            time_first=time_first,
        )
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("depth", depth)
        check_positive_int("num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got mlp_ratio={mlp_ratio!r}")
        self.img_size = pair("img_size", img_size)
        self.embed_dim = embed_dim

        def act(**overrides: Any) -> nn.Module:
            return make_activation(spiking, beta=beta, neuron_kwargs=neuron_kwargs, **overrides)

        self.patch_embed = ConvPEP(
            in_channels, embed_dim, act=act, img_size=self.img_size, patch_size=patch_size
        )
        self.blocks = nn.Sequential(
            *(
                SpikformerBlock(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    spiking=spiking,
                    act=act,
                    scale=attn_scale,
                    attn_threshold=attn_threshold,
                )
                for _ in range(depth)
            )
        )
        self.head = nn.Linear(embed_dim, num_classes)

    @staticmethod
    def min_img_size(patch_size: int | None = None, **_: Any) -> int:
        """The smallest ``img_size`` of a Spikformer: its ``patch_size`` (1 when chosen from it).

        Takes the constructor's arguments (only ``patch_size`` matters).

        >>> Spikformer.min_img_size(), Spikformer.min_img_size(patch_size=4)
        (1, 4)
        """
        return 1 if patch_size is None else int(patch_size)

    def input_spec(self) -> InputSpec:
        """Any size from ``patch_size`` on: every layer after the patch embedding is token-wise."""
        p = self.patch_embed.patch_size
        return InputSpec(
            type(self).__name__,
            self.in_channels,
            self.time_first,
            min_size=(p, p),
            why=f"the patch embedding downsamples by {p}",
        )

    @property
    def num_patches(self) -> int:
        """Tokens produced by the patch embedding for ``img_size`` (before any patch pruning)."""
        return self.patch_embed.num_patches

    def forward_features(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W]`` -> tokens ``[T, B, N', D]`` after the last block."""
        return self.blocks(self.patch_embed(x))

    def forward_head(self, x: Tensor) -> Tensor:
        """Tokens -> per-timestep logits ``[T, B, num_classes]`` (mean over the tokens)."""
        return self.head(x.mean(2))
