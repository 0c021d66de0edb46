"""DistributedDataParallel: 2 CPU processes (gloo) find the same ticket as 1 process.

Both runs use the same GLOBAL batch (the engine splits ``batch_size`` over the processes)
and the same data order (rank ``r`` takes every 2nd index of the single-process
permutation, so the two local batches of a step are the single-process batch). DDP
averages the two local mean losses' gradients, which is the global mean's gradient up to
float summation order, so the scores agree to rounding and the masks exactly.

The model has no BatchNorm on purpose: each process would normalise with the statistics
of its own half batch, which is a real difference from one process, not a rounding one.
``sync_batchnorm=True`` removes it on CUDA only (``SyncBatchNorm`` has no CPU kernel): on
CPU the engine refuses it, which the second test checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import spikelottery
from _engine_testing import EAGER
from spikelottery.engine import TrainConfig
from spikelottery.engine.distributed import (
    DistInfo,
    ShardSampler,
    convert_sync_batchnorm,
    resolve_device,
    restore_batchnorm,
)

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from torch import nn
    from spikelottery.layers import SubnetLayer
    from spikelottery.engine import TrainConfig, Trainer
    from spikelottery.neuron import LIFNeuron

    class Net(nn.Module):
        # conv -> LIF -> linear, no BatchNorm (see the test module's docstring)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.lif = LIFNeuron(beta=0.9, backend="eager")
            self.fc = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            seq = x.unsqueeze(0).expand(2, *x.shape)
            s = self.lif(self.conv(seq.flatten(0, 1)).unflatten(0, (2, x.shape[0])))
            return self.fc(s.flatten(2)).mean(0)

    out = sys.argv[1]
    cfg = TrainConfig(
        dataset="digits", resolution=8, mode="mp", pa=0.4, epochs=2, batch_size=32,
        max_batches=4, lr=0.05, out=out, progress=False, device="cpu", energy_batches=1,
    )
    torch.manual_seed(0)  # the frozen biases come from Net()'s own init
    res = Trainer(cfg, model=Net()).run()
    if int(os.environ.get("RANK", "0")) == 0:
        state = {
            name + "." + key: getattr(m, key)().clone() if key == "mask" else m.scores.detach().clone()
            for name, m in res.model.named_modules() if isinstance(m, SubnetLayer)
            for key in ("mask", "scores")
        }
        state["accuracy"] = torch.tensor(res.accuracy)
        state["world"] = torch.tensor(int(os.environ.get("WORLD_SIZE", "1")))
        torch.save(state, os.path.join(out, "ticket_state.pt"))
    """
)

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)


def _env() -> dict[str, str]:
    src = str(Path(spikelottery.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    if Path("/sys/class/net/lo").exists():  # gloo on the loopback device (no network needed)
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )


@needs_gloo
def test_two_processes_find_the_same_ticket_as_one(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, str(script), str(one)], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(two),
        ],
        tmp_path,
    )
    a = torch.load(one / "ticket_state.pt", weights_only=True)
    b = torch.load(two / "ticket_state.pt", weights_only=True)
    assert int(a.pop("world")) == 1 and int(b.pop("world")) == 2
    assert a.keys() == b.keys() and any(k.endswith(".mask") for k in a)
    for key in a:
        if key.endswith(".mask"):
            assert torch.equal(a[key], b[key]), key
        elif key.endswith(".scores"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    # Same masks, same frozen weights and no BatchNorm: the same test accuracy exactly.
    assert float(a["accuracy"]) == float(b["accuracy"])
    # Only rank 0 wrote files, and the results record the global batch.
    assert (two / "results.json").is_file() and (two / "checkpoint.pt").is_file()
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(".")) == []


REFUSE = textwrap.dedent(
    """
    import torch.distributed as dist
    from spikelottery.engine import TrainConfig, Trainer

    cfg = TrainConfig(
        model="vgg_tiny", dataset="digits", resolution=8, epochs=1, batch_size=8, max_batches=1,
        out=None, progress=False, device="cpu", sync_batchnorm=True,
    )
    try:
        Trainer(cfg).run()
    except ValueError as exc:
        assert exc.field == "sync_batchnorm" and "CUDA" in str(exc), exc
        assert not dist.is_initialized()  # the engine left the process group it made
        print("refused", flush=True)
    """
)


@needs_gloo
def test_sync_batchnorm_on_cpu_is_refused_before_training(tmp_path: Path) -> None:
    script = tmp_path / "refuse.py"
    script.write_text(REFUSE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("refused") == 2


def test_sync_batchnorm_conversion_keeps_the_multistep_layout() -> None:
    from spikelottery.models import create_model
    from spikelottery.multistep import SeqBatchNorm2d

    torch.manual_seed(0)
    net = create_model("vgg_tiny", in_channels=1, img_size=8, timesteps=2, **EAGER)
    x = torch.rand(4, 1, 8, 8)
    keys = list(net.state_dict())
    expected = net(x)
    torch.manual_seed(0)
    again = create_model("vgg_tiny", in_channels=1, img_size=8, timesteps=2, **EAGER)
    converted = convert_sync_batchnorm(again)
    assert converted and all(isinstance(m, nn.SyncBatchNorm) for m, _ in converted)
    assert all(isinstance(m, SeqBatchNorm2d) for m, _ in converted)
    assert list(again.state_dict()) == keys
    # Without a process group SyncBatchNorm computes plain batch norm: same output, same stats.
    torch.testing.assert_close(again(x), expected)
    restore_batchnorm(converted)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in again.modules())
    for (k1, v1), (k2, v2) in zip(net.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    with pytest.raises(ValueError, match="sync_batchnorm"):
        TrainConfig(sync_batchnorm="yes")


def test_one_process_and_its_device() -> None:
    one = DistInfo()
    assert (one.rank, one.world, one.main, one.enabled) == (0, 1, True, False)
    assert resolve_device("cpu", one) == torch.device("cpu")
    assert resolve_device("auto", one).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(spikelottery.SpikeLotteryError, match="CUDA is not available"):
            resolve_device("cuda", one)
    # the test set is split without padding: every index once over the ranks
    shards = [list(ShardSampler(7, rank, 3)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(7))
    assert [len(ShardSampler(7, rank, 3)) for rank in range(3)] == [3, 2, 2]
