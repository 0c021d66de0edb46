"""Shared helpers of the ticket tests: a small CNN with a mixed-mode ticket, comparisons."""

from __future__ import annotations

from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spikelottery import sparsify
from spikelottery.layers import SubnetLayer
from spikelottery.tickets import save_ticket
from spikelottery.tickets.format import ticket_digest

# Two timesteps and the eager LIF loop: compiling the fused neuron would cost more than
# these tiny models run.
FAST = {"timesteps": 2, "neuron_kwargs": {"backend": "eager"}}


def randomise_state(model: nn.Module) -> nn.Module:
    """Non-default BatchNorm statistics and affine values, so 'other tensors' matter."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.2)
    return model


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The zoo's multi-step neurons start every forward at rest: no reset needed.
    with torch.no_grad():
        return model(x)


def assert_same_ticket(a: nn.Module, b: nn.Module) -> None:
    la = {n: m for n, m in a.named_modules() if isinstance(m, SubnetLayer)}
    lb = {n: m for n, m in b.named_modules() if isinstance(m, SubnetLayer)}
    assert la.keys() == lb.keys()
    for name, layer in la.items():
        other = lb[name]
        assert (layer.pa, layer.mode) == (other.pa, other.mode), name
        assert torch.equal(layer.mask(), other.mask()), name
        assert torch.equal(layer.effective_weight(), other.effective_weight()), name
        if layer.mode == "mp":
            assert torch.equal(layer.alpha(), other.alpha()), name


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert not any(isinstance(m, SubnetLayer) for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def save_cnn_ticket(tmp_path: Path) -> tuple[nn.Module, Path]:
    """The small CNN with a mixed ticket (mp, pa 0.4; layer "3" at pa 0.6; "7" in lt), saved."""
    net = randomise_state(small_cnn()).eval()
    sparsify(net, 0.4, mode="mp", layer_pa={"3": 0.6})
    net[7].set_mode("lt")  # mixed modes in one ticket
    return net, save_ticket(net, tmp_path / "cnn.safetensors")


def rewrite_ticket(path: Path, out: Path, *, reseal: bool = True, **meta_changes: str) -> Path:
    """Copy a ticket with changed metadata; ``reseal`` recomputes the checksum (a forgery)."""
    with safetensors.safe_open(path, "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(meta_changes)
    if reseal:
        meta["sha256"] = ticket_digest(tensors, meta)
    out.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    return out
