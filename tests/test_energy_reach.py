"""The fast exact count (issue 24, item 6): one pass over a conv's input against the map of
kept weights each input element reaches equals the convolution count, exactly."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikelottery.energy import conv_synops, estimate_energy
from spikelottery.energy.synops import conv_reach, row_counts
from spikelottery.multistep import MultiStep
from spikelottery.neuron import LIFNeuron


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


def test_a_changed_weight_is_recounted_across_estimates() -> None:
    conv = nn.Conv2d(1, 2, 3, bias=False)
    model = nn.Sequential(MultiStep(conv), LIFNeuron(), MultiStep(nn.Flatten()), nn.Linear(8, 2))
    x = (torch.rand(3, 2, 1, 4, 4) < 0.5).float()  # [T, B, ...] event frames
    with torch.no_grad():
        conv.weight.fill_(1.0)
    first = estimate_energy(model, x)
    conv.weight.data[0] = 0.0  # through .data: no version bump; the weight's sum tells
    second = estimate_energy(model, x)
    assert first.rows[0].density == 1.0 and second.rows[0].density == 0.5
    assert second.rows[0].exact_ops == first.rows[0].exact_ops / 2


def test_inference_mode_gives_the_same_count() -> None:
    conv = nn.Conv2d(1, 2, 3)
    x = (torch.rand(3, 2, 1, 4, 4) < 0.5).float()
    model = nn.Sequential(MultiStep(conv), LIFNeuron(threshold=0.1))
    expected = estimate_energy(model, x).exact_sops
    with torch.inference_mode():
        frozen = nn.Sequential(MultiStep(nn.Conv2d(1, 2, 3)), LIFNeuron(threshold=0.1))
        frozen.load_state_dict(model.state_dict())
        assert estimate_energy(frozen, x).exact_sops == expected
