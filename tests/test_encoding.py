"""Input encoders: direct encoding and event-frame reordering."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikelottery.encoding import (
    DirectEncoder,
    EventFrames,
    direct_encode,
    encode,
    event_frames_to_seq,
)

dims = st.lists(st.integers(1, 4), min_size=1, max_size=3)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), rest=dims, t=st.integers(1, 5))
def test_direct_encode_repeats_the_batch(b, rest, t):
    x = torch.randn(b, *rest, requires_grad=True)
    seq = direct_encode(x, t)
    assert seq.shape == (t, b, *rest)
    for i in range(t):
        assert torch.equal(seq[i], x)
    seq.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, float(t)))  # every step feeds back
    seq[0].detach().zero_()
    assert x.abs().sum() > 0  # a copy, not a view of x


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 5), h=st.integers(1, 4), w=st.integers(1, 4))
def test_event_frames_are_reordered_time_first(b, t, h, w):
    x = torch.randn(b, t, 2, h, w)
    seq = event_frames_to_seq(x)
    assert seq.shape == (t, b, 2, h, w)
    for i in range(t):
        for j in range(b):
            assert torch.equal(seq[i, j], x[j, i])
    assert torch.equal(encode(x), seq)
    assert torch.equal(EventFrames()(x), seq)


def test_event_frames_need_two_polarities():
    with pytest.raises(ValueError, match="expected 2 polarities"):
        event_frames_to_seq(torch.rand(2, 4, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, T, 2, H, W\]"):
        event_frames_to_seq(torch.rand(4, 2, 8, 8))


def test_encode_picks_by_dimension():
    img = torch.rand(5, 3, 8, 8)
    assert torch.equal(encode(img, 4), direct_encode(img, 4))
    assert encode(torch.rand(5, 10), 2).shape == (2, 5, 10)
    events = torch.rand(5, 6, 2, 8, 8)
    assert encode(events, 6).shape == (6, 5, 2, 8, 8)
    with pytest.raises(ValueError, match="T=6"):
        encode(events, 4)
    with pytest.raises(ValueError, match="timesteps is required"):
        encode(img)
    with pytest.raises(TypeError):
        encode([1, 2, 3], 2)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_bad_timesteps(bad):
    with pytest.raises(ValueError, match="timesteps"):
        direct_encode(torch.rand(2, 3), bad)
    with pytest.raises(ValueError, match="timesteps"):
        DirectEncoder(bad)


def test_direct_encoder_module():
    enc = DirectEncoder(4)
    assert enc(torch.rand(2, 3, 8, 8)).shape == (4, 2, 3, 8, 8)
    assert "timesteps=4" in repr(enc)
