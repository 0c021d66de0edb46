"""Properties of the pure mask functions: exact kept counts, alpha, and the score gradient."""

from __future__ import annotations

import math
from fractions import Fraction

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

from spikelottery.functional import kept_count, topk_mask
from spikelottery.masks import approx_sign, binary_sign, mp_alpha, subnet_weight

ratios = st.floats(min_value=0.0, max_value=0.999, allow_nan=False).map(lambda p: round(p, 3))
shapes = st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple)


@given(n=st.integers(0, 10_000), p=ratios)
def test_kept_count_is_n_minus_floor(n: int, p: float) -> None:
    expected = n - math.floor(Fraction(str(p)) * n)
    assert kept_count(n, p) == expected
    if n:
        assert 1 <= kept_count(n, p) <= n


def test_kept_count_uses_the_decimal_value() -> None:
    assert kept_count(100, 0.29) == 71  # float arithmetic would remove only 28
    assert kept_count(64, 0.3) == 45
    assert kept_count(10, 0.0) == 10


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.3", True])
def test_ratio_errors_name_the_argument(bad: object) -> None:
    with pytest.raises(ValueError, match="pa"):
        topk_mask(torch.randn(10), bad)  # type: ignore[arg-type]


@given(shape=shapes, p=ratios, seed=st.integers(0, 2**16))
def test_topk_mask_exact_count_and_largest(shape: tuple[int, ...], p: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(shape, generator=g)
    mask = topk_mask(scores, p)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert int(mask.sum()) == kept_count(scores.numel(), p)
    if mask.any() and (~mask).any():
        assert scores.abs()[mask].min() >= scores.abs()[~mask].max()


@given(n=st.integers(2, 200), p=ratios)
def test_topk_mask_exact_with_ties(n: int, p: float) -> None:
    scores = torch.ones(n)  # every entry tied
    assert int(topk_mask(scores, p).sum()) == kept_count(n, p)


@given(shape=shapes, p=ratios)
def test_alpha_is_mean_abs_kept_weight(shape: tuple[int, ...], p: float) -> None:
    w, s = torch.randn(shape), torch.randn(shape)
    mask = topk_mask(s, p)
    expected = w.abs()[mask].mean()
    torch.testing.assert_close(mp_alpha(w, mask), expected)


@given(shape=shapes, p=ratios, binarised=st.booleans(), seed=st.integers(0, 2**16))
def test_score_gradient_matches_formula(
    shape: tuple[int, ...], p: float, binarised: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    s = torch.randn(shape, generator=g, dtype=torch.float64)  # negative scores included
    upstream = torch.randn(shape, generator=g, dtype=torch.float64)
    s.requires_grad_(True)
    mask = topk_mask(s, p)
    alpha = mp_alpha(w, mask) if binarised else None
    w_eff = subnet_weight(s, w, mask, alpha)
    (w_eff * upstream).sum().backward()
    # dL/ds = sign(s) * W * dL/dw_eff: a wrong sign makes the search learn backwards.
    torch.testing.assert_close(s.grad, torch.sign(s.detach()) * w * upstream)


@given(shape=shapes, p=ratios)
def test_effective_weight_values(shape: tuple[int, ...], p: float) -> None:
    w, s = torch.randn(shape), torch.randn(shape)
    mask = topk_mask(s, p)
    torch.testing.assert_close(subnet_weight(s, w, mask), w * mask)
    alpha = mp_alpha(w, mask)
    torch.testing.assert_close(subnet_weight(s, w, mask, alpha), alpha * torch.sign(w) * mask)


def test_subnet_weight_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        subnet_weight(torch.randn(3), torch.randn(4), torch.ones(4, dtype=torch.bool))


def test_binary_sign_never_zero() -> None:
    assert binary_sign(torch.tensor([-1.0, 0.0, 2.0])).tolist() == [-1.0, 1.0, 1.0]


@given(x=st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=50))
def test_approx_sign_gradient(x: list[float]) -> None:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = approx_sign(t)
    assert set(out.tolist()) <= {-1.0, 1.0}
    out.sum().backward()
    expected = torch.where(t.abs() <= 1, 2 * (1 - t.abs()), torch.zeros_like(t)).detach()
    torch.testing.assert_close(t.grad, expected)


@given(shape=shapes, p=ratios, binarised=st.booleans(), seed=st.integers(0, 2**16))
def test_precomputed_path_matches_reference(
    shape: tuple[int, ...], p: float, binarised: bool, seed: int
) -> None:
    """The custom autograd path against a reference built from plain autograd ops."""
    from spikelottery.masks import precompute_subnet, subnet_weight_precomputed

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)
    s = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)
    up = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = topk_mask(s, p)
    m = mask.double()
    alpha = mp_alpha(w, mask) if binarised else None
    value = (w * m if alpha is None else alpha * torch.sign(w) * m).detach()
    wgrad = m if alpha is None else alpha * m
    # Straight-through by construction: the value of `value`, the gradient sign(s) * W to
    # the scores and `wgrad` to the weights, all from ordinary autograd.
    ref = value + (s.abs() - s.abs().detach()) * w.detach() + (w - w.detach()) * wgrad
    (ref * up).sum().backward()
    ref_gs, ref_gw = s.grad.clone(), w.grad.clone()
    s.grad = w.grad = None
    fast = subnet_weight_precomputed(s, w, precompute_subnet(s, w, mask, alpha))
    (fast * up).sum().backward()
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(s.grad, ref_gs)
    torch.testing.assert_close(w.grad, ref_gw)


@given(
    shape=shapes,
    p=ratios,
    seed=st.integers(0, 2**16),
    levels=st.integers(1, 6),  # few distinct values: many ties
)
def test_sorted_mask_equals_topk_mask_ties_included(
    shape: tuple[int, ...], p: float, seed: int, levels: int
) -> None:
    from spikelottery.masks import topk_mask_sorted

    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-levels, levels + 1, shape, generator=g).float()
    assert torch.equal(topk_mask_sorted(scores, p), topk_mask(scores, p))
    scores = torch.randn(shape, generator=g)
    assert torch.equal(topk_mask_sorted(scores, p), topk_mask(scores, p))


@given(shape=shapes, p=ratios, seed=st.integers(0, 2**16))
def test_fast_effective_weight_equals_its_definition_bit_for_bit(
    shape: tuple[int, ...], p: float, seed: int
) -> None:
    from spikelottery.masks import precompute_subnet

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w.view(-1)[0] = -0.0  # sign(-0.0) is +1 in a binary weight
    s = torch.randn(shape, generator=g)
    mask = topk_mask(s, p)
    alpha = mp_alpha(w, mask)
    assert torch.equal(mp_alpha(w, mask, int(mask.sum())), alpha)
    weff, _ = precompute_subnet(s, w, mask, alpha)
    want = binary_sign(w) * mask.float() * alpha
    assert torch.equal(weff, want)
    assert torch.equal(torch.signbit(weff), torch.signbit(want))  # even the sign of zeros


@pytest.mark.parametrize("nan", [1, 5, 32])
def test_nan_scores_are_an_error_not_a_smaller_mask(nan: int) -> None:
    scores = torch.randn(32)
    scores[:nan] = float("nan")
    with pytest.raises(ValueError, match=f"{nan} NaN or infinite value"):
        topk_mask(scores, 0.375)
    scores[:nan] = float("inf")
    with pytest.raises(ValueError, match="diverged"):
        topk_mask(scores, 0.0)


def test_a_layer_with_nan_scores_names_itself() -> None:
    from spikelottery import SpikeLotteryError, SubnetLinear

    fc = SubnetLinear(8, 4, pa=0.5)
    with torch.no_grad():
        fc.scores[0, :3] = float("nan")
    with pytest.raises(SpikeLotteryError, match=r"SubnetLinear\(in_features=8.*3 NaN or inf"):
        fc(torch.randn(2, 8))
