"""The radix select of ``topk_mask`` against the kthvalue reference: the same mask, bit for bit.

``topk_mask`` finds its threshold from a histogram of the scores' float bits and one
bucket; ``topk_mask_kthvalue`` is the earlier definition (one ``kthvalue``, ties at the
threshold to the earliest positions). Every mask, count, tie, error and effective weight
must agree with it, over adversarial inputs and over a real score search.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch import nn

from spikelottery import SubnetConv, SubnetLinear
from spikelottery.functional import kept_count, topk_mask
from spikelottery.layers import SubnetLayer
from spikelottery.masks import (
    _RADIX_DTYPES,
    _RADIX_MIN_NUMEL,
    _radix_mask,
    _top_words,
    _true_positions,
    float_mask,
    topk_mask_kthvalue,
)

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KINDS = ("normal", "levels", "signed zeros", "denormals", "all equal", "wide")


def _pick(palette: list[float], n: int, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    values = torch.tensor(palette, dtype=torch.float64)  # float64: no denormal underflows
    return values[torch.randint(len(palette), (n,), generator=g)].to(dtype)


def _scores(kind: str, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tiny = torch.finfo(dtype).tiny  # the smallest normal: below it, denormals
    if kind == "normal":
        return torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    if kind == "levels":  # few distinct magnitudes: ties everywhere, both signs of each
        palette = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 3.0, tiny / 4, -tiny / 4]
        return _pick(palette, n, dtype, g)
    if kind == "signed zeros":
        return _pick([0.0, -0.0], n, dtype, g)
    if kind == "denormals":  # denormals, the smallest normals and zeros, of both signs
        palette = [0.0, -0.0, tiny / 8, -tiny / 8, tiny / 4, tiny / 2, -tiny / 2, tiny, -tiny]
        return _pick([*palette, 2 * tiny], n, dtype, g)
    if kind == "all equal":
        return torch.full((n,), -2.5, dtype=dtype)
    # "wide": magnitudes over the whole exponent range, many in one bucket and many apart
    exponent = torch.randint(-30, 12, (n,), generator=g).to(torch.float64)  # float16: finite
    mantissa = torch.randint(0, 3, (n,), generator=g).to(torch.float64) / 4 + 1
    sign = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
    return (sign * mantissa * torch.pow(2.0, exponent)).to(dtype)


shapes = st.lists(st.integers(1, 9), min_size=0, max_size=4).map(tuple)
ratios = st.floats(min_value=0.0, max_value=0.99, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(KINDS),
    pa=ratios,
    seed=st.integers(0, 2**16),
)
def test_radix_select_is_the_reference_bit_for_bit(
    shape: tuple[int, ...], dtype: torch.dtype, kind: str, pa: float, seed: int
) -> None:
    n = math.prod(shape)
    scores = _scores(kind, n, dtype, seed).reshape(shape)
    ref = topk_mask_kthvalue(scores, pa)
    assert torch.equal(topk_mask(scores, pa), ref)
    keep = kept_count(n, pa)
    if 0 < keep < n:  # the radix path itself, whatever the size
        assert torch.equal(_radix_mask(scores.reshape(-1), keep).view(shape), ref)
        numbers = _radix_mask(scores.reshape(-1), keep, torch.float32).view(shape)
        assert numbers.dtype == torch.float32 and torch.equal(numbers, ref.float())


@settings(max_examples=25, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(KINDS),
    pa=ratios,
    seed=st.integers(0, 2**16),
)
def test_large_tensors_take_the_radix_path_and_agree(
    dtype: torch.dtype, kind: str, pa: float, seed: int
) -> None:
    n = _RADIX_MIN_NUMEL + seed % 5000
    scores = _scores(kind, n, dtype, seed).reshape(-1, 1)
    ref = topk_mask_kthvalue(scores, pa)
    assert torch.equal(topk_mask(scores, pa), ref)
    for out in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        numbers = topk_mask(scores, pa, dtype=out)  # written directly as 1.0 / 0.0
        assert numbers.dtype == out and torch.equal(numbers, ref.to(out))
    wide = scores.reshape(1, -1).expand(3, -1).t()  # not contiguous
    assert torch.equal(topk_mask(wide, pa), topk_mask_kthvalue(wide, pa))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.complex64])
def test_a_mask_dtype_that_is_not_bool_or_floating_is_refused(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match="dtype must be torch.bool or a floating dtype"):
        topk_mask(torch.randn(10), 0.5, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_tensors(dtype: torch.dtype, n: int) -> None:
    for values in ([-0.0, 0.0, 0.0], [1.0, -1.0, 1.0], [2.0, -3.0, 0.5]):
        scores = torch.tensor(values[:n], dtype=dtype)
        for pa in (0.0, 0.3, 0.5, 0.7, 0.99):
            ref = topk_mask_kthvalue(scores, pa)
            assert torch.equal(topk_mask(scores, pa), ref)
            keep = kept_count(n, pa)
            if keep < n:
                assert torch.equal(_radix_mask(scores, keep), ref)


def test_signed_zero_is_a_tie_broken_by_position() -> None:
    assert torch.tensor(-0.0).abs().view(torch.int32).item() == 0  # abs clears the sign bit
    scores = torch.tensor([-0.0, 0.0, -0.0, 0.0, 1.0])
    mask = _radix_mask(scores, 3)
    assert mask.tolist() == [True, True, False, False, True]
    assert torch.equal(mask, topk_mask_kthvalue(scores, 0.4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_words_are_the_high_bits(dtype: torch.dtype) -> None:
    x = _scores("wide", 64, dtype, 0)
    words, inf_key = _RADIX_DTYPES[dtype]
    bits = {1: torch.int16, 2: torch.int32, 4: torch.int64}[words]
    expected = x.view(bits) >> (16 * (words - 1))  # arithmetic shift: the signed top word
    assert torch.equal(_top_words(x).to(torch.int64), expected.to(torch.int64))
    inf = torch.tensor([float("inf")], dtype=dtype)
    assert int(_top_words(inf)) == inf_key
    finite_max = torch.tensor([torch.finfo(dtype).max], dtype=dtype)
    assert int(_top_words(finite_max)) < inf_key


def _minus_nan(dtype: torch.dtype) -> torch.Tensor:
    nan = torch.tensor([float("nan")], dtype=dtype)
    words, _ = _RADIX_DTYPES[dtype]
    bits = {1: torch.int16, 2: torch.int32, 4: torch.int64}[words]
    return (nan.view(bits) | torch.tensor(-1, dtype=bits) << (16 * words - 1)).view(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [40, _RADIX_MIN_NUMEL + 7])
@pytest.mark.parametrize("pa", [0.0, 0.375, 0.99])
def test_nan_and_inf_raise_the_reference_error(dtype: torch.dtype, n: int, pa: float) -> None:
    for bad in (float("nan"), float("inf"), float("-inf"), None):
        scores = torch.randn(n, dtype=dtype)
        scores[3:8] = _minus_nan(dtype) if bad is None else bad  # None: NaN with the sign bit
        with pytest.raises(ValueError) as want:
            topk_mask_kthvalue(scores, pa)
        assert "5 NaN or infinite value(s)" in str(want.value)
        with pytest.raises(ValueError) as got:
            topk_mask(scores, pa)
        assert str(got.value) == str(want.value)
        keep = kept_count(n, pa)
        if keep < n:
            with pytest.raises(ValueError) as radix:
                _radix_mask(scores, keep)
            assert str(radix.value) == str(want.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_float_mask_is_the_bool_mask_as_numbers(dtype: torch.dtype) -> None:
    mask = topk_mask(torch.randn(3, 5, 7), 0.4).transpose(0, 2)  # not contiguous
    assert torch.equal(float_mask(mask, dtype), mask.to(dtype))
    assert float_mask(mask, dtype).dtype == dtype
    floats = mask.to(dtype)
    assert float_mask(floats, dtype) is floats


class _Net(nn.Module):
    """Three score-mask layers, two of them above the radix path's size threshold."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.c1 = SubnetConv(3, 32, 3, padding=1, pa=0.5, mode=mode)  # 864 weights
        self.c2 = SubnetConv(32, 32, 3, padding=1, pa=0.4, mode=mode)  # 9216
        self.fc = SubnetLinear(32 * 4 * 4, 10, pa=0.3, mode=mode)  # 5120

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("lr", [0.1, 0.01])
@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_fifty_steps_of_a_real_search_keep_the_reference_masks(lr: float, mode: str) -> None:
    torch.manual_seed(0)
    net = _Net(mode)
    layers = [m for m in net.modules() if isinstance(m, SubnetLayer)]
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    changed = 0
    before = [topk_mask_kthvalue(layer.scores, layer.pa) for layer in layers]
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        for i, layer in enumerate(layers):
            scores, w = layer.scores.detach(), layer.frozen_weight.detach()
            ref = topk_mask_kthvalue(scores, layer.pa)
            assert torch.equal(_radix_mask(scores.reshape(-1), layer.kept).view_as(ref), ref)
            assert torch.equal(topk_mask(scores, layer.pa), ref)
            # The layer's effective weight (its next forward) is built from the same mask.
            weff = layer.effective_weight().detach()
            if mode == "lt":
                assert torch.equal(weff, w * ref)
            else:
                alpha = (w.abs() * ref).sum() / ref.sum()
                assert torch.equal(layer.alpha(), alpha)
                assert torch.equal(weff, torch.where(w >= 0, alpha, -alpha) * ref)
            assert torch.equal(layer.mask(), ref)
            changed += int((ref != before[i]).sum())
            before[i] = ref
    assert changed > 0  # the search really moved the masks


@pytest.mark.parametrize("n", [100, _RADIX_MIN_NUMEL + 100])
def test_a_float16_sum_that_overflows_is_no_error(n: int) -> None:
    scores = torch.full((n,), 60000.0, dtype=torch.float16)  # finite; their sum is not
    scores[::3] = 1.0
    assert not torch.isfinite(scores.sum())
    ref = topk_mask_kthvalue(scores, 0.5)
    assert torch.equal(topk_mask(scores, 0.5), ref)
    assert int(ref.sum()) == kept_count(n, 0.5)


@given(
    flags=st.lists(st.booleans(), min_size=0, max_size=70),
    offset=st.integers(0, 7),
)
def test_true_positions_is_nonzero(flags: list[bool], offset: int) -> None:
    t = torch.tensor([False] * 8 + flags, dtype=torch.bool)[8 - offset :]  # any alignment
    assert torch.equal(_true_positions(t), t.nonzero().flatten())
