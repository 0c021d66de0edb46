"""Multi-step helpers: MultiStep, SeqBatchNorm1d/2d (against SpikingJelly's multi-step BN)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spikelottery.multistep import MultiStep, SeqBatchNorm1d, SeqBatchNorm2d, seq_apply
from spikelottery.neuron import LIFNeuron


def _sj_layer():  # SpikingJelly is an optional extra: only its comparison tests need it
    return pytest.importorskip("spikingjelly.activation_based.layer")


@settings(max_examples=15, deadline=None)
@given(t=st.integers(1, 4), b=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_multistep_equals_a_loop_over_time(t, b, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(t, b, 2, 5, 5)
    expected = torch.stack([conv(x[i]) for i in range(t)])
    torch.testing.assert_close(MultiStep(conv)(x), expected)


def test_pooling_through_multistep():
    pool = MultiStep(nn.AvgPool2d(2))
    x = torch.rand(4, 2, 3, 8, 8)
    out = pool(x)
    assert out.shape == (4, 2, 3, 4, 4)
    torch.testing.assert_close(out[1, 0, 2, 0, 0], x[1, 0, 2, :2, :2].mean())
    assert "input [T, B, ...]" in repr(pool)


def test_seq_apply_rejects_missing_time_dimension():
    with pytest.raises(ValueError, match=r"\[T, B"):
        seq_apply(nn.ReLU(), torch.rand(3))
    with pytest.raises(TypeError, match="nn.Module"):
        MultiStep(lambda x: x)


def _copy_bn(src: nn.Module, dst: nn.Module) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)


@settings(max_examples=10, deadline=None)
@given(t=st.integers(1, 3), b=st.integers(2, 3), seed=st.integers(0, 2**16))
def test_seqbatchnorm2d_equals_spikingjelly(t, b, seed):
    torch.manual_seed(seed)
    ours = SeqBatchNorm2d(4)
    ref = _sj_layer().BatchNorm2d(4, step_mode="m")
    nn.init.uniform_(ours.weight)
    nn.init.uniform_(ours.bias)
    _copy_bn(ours, ref)
    x = torch.randn(t, b, 4, 3, 3) * 2 + 1
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))
    assert ours(x[0]).shape == x[0].shape  # plain [B, C, H, W] still works


def test_seqbatchnorm1d_normalises_the_last_dim_like_spikingjelly():
    torch.manual_seed(0)
    ours = SeqBatchNorm1d(6)
    ref = _sj_layer().BatchNorm1d(6, step_mode="m")  # channels-first [T, B, C, L]
    x = torch.randn(3, 2, 5, 6) * 3 - 1  # [T, B, N, D]
    out = ours(x)
    torch.testing.assert_close(out, ref(x.transpose(2, 3)).transpose(2, 3))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    assert ours(torch.randn(3, 2, 6)).shape == (3, 2, 6)  # [T, B, D]
    assert ours(torch.randn(4, 6)).shape == (4, 6)  # [B, D]
    with pytest.raises(ValueError, match="last dimension"):
        ours(torch.randn(3, 2, 6, 5))


def test_batchnorms_stay_real_batchnorms():
    for bn, name in ((SeqBatchNorm2d(4), nn.BatchNorm2d), (SeqBatchNorm1d(4), nn.BatchNorm1d)):
        assert isinstance(bn, _BatchNorm) and isinstance(bn, name)
        assert set(bn.state_dict()) == set(name(4).state_dict())
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        SeqBatchNorm2d(4)(torch.rand(2, 4, 3))


def test_block_conv_bn_lif_and_sparsify_nonaffine():
    from spikelottery import sparsify

    block = nn.Sequential(
        MultiStep(nn.Conv2d(3, 8, 3, padding=1)),
        SeqBatchNorm2d(8),
        LIFNeuron(beta=0.9, backend="eager"),
        MultiStep(nn.AvgPool2d(2)),
    )
    sparsify(block, 0.5, batchnorm="nonaffine")
    bn = block[1]
    assert not bn.weight.requires_grad and torch.all(bn.weight == 1)
    # BN keys stay plain (no wrapper in between); MultiStep holds its layer as "module".
    assert {"0.module.weight", "1.weight", "1.bias", "1.running_mean"} <= set(block.state_dict())
    x = torch.rand(4, 2, 3, 8, 8)
    out = block(x)
    assert out.shape == (4, 2, 8, 4, 4)
    out.sum().backward()
    assert block[0].module.scores.grad is not None
