"""The fast exact count (issue 24, item 6): one pass over a conv's input against the map of
kept weights each input element reaches equals the convolution count, exactly."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikelottery.energy import conv_synops
from spikelottery.energy._synops import conv_reach, row_counts


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    transposed=st.booleans(),
    pruned=st.floats(0, 0.8),
)
def test_reach_map_count_equals_the_conv_count(
    seed: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    transposed: bool,
    pruned: float,
) -> None:
    torch.manual_seed(seed)
    shape = (4, 2, 3, 3) if transposed else (4, 4 // groups, 3, 3)
    w = torch.randn(shape) * (torch.rand(shape) >= pruned)
    x = (torch.rand(5, 4, 7, 7) < 0.3).float()
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if transposed:
        kw["transposed"] = True
    reach = conv_reach(x.shape[1:], w, **kw)
    expected = conv_synops(x, w, **kw)
    assert torch.equal(row_counts(x, reach, binary=True), expected)
    assert torch.equal(row_counts(x, reach), expected)
    graded = x * torch.randint(1, 5, x.shape) / 4  # pooled spikes: k / 4
    assert torch.equal(row_counts(graded, reach), conv_synops(graded, w, **kw))
    assert torch.allclose(
        row_counts(graded, reach, values=True), conv_synops(graded, w, values=True, **kw)
    )


def test_large_counts_stay_exact() -> None:
    # Row sums far above 2**24: the float32 product is split into exact chunks.
    reach = torch.full((70_000,), 999.0)
    x = torch.ones(2, 70_000)
    x[1, ::2] = 0
    counts = row_counts(x, reach, binary=True)
    assert counts.tolist() == [70_000 * 999.0, 35_000 * 999.0]
    assert counts.dtype == torch.float64
