"""Shared test settings: deterministic seeds and a hypothesis profile sized for 2 CPU cores."""

from __future__ import annotations

import os

# The compiled LIF kernels are tested explicitly (backend="compiled"); elsewhere the
# uncompiled fused kernels save a one-off compile per test process.
os.environ.setdefault("SPIKELOTTERY_COMPILE", "0")

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


# Small tensors on a shared 2-core machine run faster and steadier on one thread.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
