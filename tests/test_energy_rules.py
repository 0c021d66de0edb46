"""Tests of the per-op rules (``energy/_rules.py``): the MACs each torch call does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikelottery.energy import count_ops, estimate_energy


def conv_out(size: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def conv_macs(
    cin: int,
    cout: int,
    k: int,
    h: int,
    w: int,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> int:
    """MACs of one conv on one image: every output element reads (cin / groups) * k * k inputs."""
    return (
        cout
        * conv_out(h, k, stride, padding)
        * conv_out(w, k, stride, padding)
        * (cin // groups)
        * k
        * k
    )


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "padding", "groups", "size"),
    [
        (3, 8, 3, 1, 1, 1, 9),  # same padding
        (3, 8, 3, 1, 0, 1, 9),  # valid
        (4, 6, 5, 2, 2, 1, 11),  # stride 2
        (8, 8, 3, 1, 1, 8, 7),  # depthwise
        (8, 12, 3, 2, 1, 4, 10),  # grouped, strided
        (5, 7, 1, 1, 0, 1, 6),  # 1x1
    ],
)
def test_conv_macs_match_hand_count(
    cin: int, cout: int, k: int, stride: int, padding: int, groups: int, size: int
) -> None:
    conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups)
    (c,) = count_ops(conv, torch.rand(3, cin, size, size))
    assert c.kind == "conv"
    assert c.macs == conv_macs(
        cin, cout, k, size, size, stride=stride, padding=padding, groups=groups
    )
    assert c.steps == 1


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 4),
    cout=st.integers(1, 5),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    h=st.integers(4, 9),
    w=st.integers(4, 9),
)
def test_conv_macs_property(
    cin: int, cout: int, k: int, stride: int, padding: int, h: int, w: int
) -> None:
    conv = nn.Conv2d(cin, cout, k, stride, padding)
    (c,) = count_ops(conv, torch.rand(2, cin, h, w))
    hand = cout * conv_out(h, k, stride, padding) * conv_out(w, k, stride, padding) * cin * k * k
    assert c.macs == hand


def test_conv_transpose_macs_and_shape() -> None:
    # Every input element scatters to (cout / groups) * k * k outputs.
    deconv = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    (c,) = count_ops(deconv, torch.rand(2, 4, 5, 5))
    assert (c.kind, c.macs) == ("conv", 4 * 5 * 5 * 3 * 9)
    assert c.shape == "4x5x5 -> 6x11x11, k3x3, s2x2, g2, transposed"


def test_linear_conv1d_and_tokens() -> None:
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
    counts = count_ops(net, torch.rand(5, 6))
    assert [(c.name, c.macs) for c in counts] == [("0", 60), ("2", 40)]
    # Tokens: [B, N, D] -> N * D_in * D_out per sample, one step.
    (c,) = count_ops(nn.Linear(8, 3), torch.rand(2, 7, 8))
    assert (c.macs, c.steps, c.shape) == (7 * 8 * 3, 1, "7x (8 -> 3)")
    (c,) = count_ops(nn.Conv1d(4, 6, 3, padding=1), torch.rand(2, 4, 10))
    assert c.macs == 6 * 10 * 4 * 3


def test_torch_attention_mha_sdpa_einsum_hand_counts() -> None:
    n, e, heads, b = 10, 16, 2, 3
    layer = nn.TransformerEncoderLayer(e, heads, 32, batch_first=True, dropout=0.0)
    report = estimate_energy(layer, torch.rand(b, n, e))
    macs = {r.name: r.macs for r in report.rows}
    assert macs == {
        "self_attn.in_proj": n * 3 * e * e,
        "self_attn.matmul0": n * n * e,
        "self_attn.matmul1": n * n * e,
        "self_attn.out_proj": n * e * e,
        "linear1": n * e * 32,
        "linear2": n * 32 * e,
    }
    assert report.timesteps == 1

    class Sdpa(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(e, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.einsum("bnd,de->bne", x, self.w)
            return F.scaled_dot_product_attention(y, y, y)

    counts = count_ops(Sdpa(), torch.rand(b, n, e))
    assert [(c.name, c.macs) for c in counts] == [
        ("matmul0", n * e * 8),
        ("matmul1", n * 8 * n),
        ("matmul2", n * n * 8),
    ]


def test_addmm_weight_is_not_the_spike_operand() -> None:
    class Addmm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.addmm(torch.zeros(5), (x > 0).float(), self.w)

    x = torch.randn(4, 8)
    (c,) = count_ops(Addmm(), x)
    assert (c.kind, c.macs, c.binary, c.spike_operand) == ("matmul", 8 * 5, True, "left")
    assert c.rate == pytest.approx((x > 0).float().mean().item())
