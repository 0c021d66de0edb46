"""What decides a run's numbers besides its settings: software, hardware, threads, determinism.

:func:`describe_environment` is the ``environment`` record of ``results.json``. Two runs
of the same settings and seed agree bit for bit only in the same environment: another
PyTorch version, another device or another thread count can change float rounding (and,
through it, which weights a search keeps). ``spikelottery report`` warns when it averages
or pairs runs whose environments differ (:mod:`spikelottery.report.environment`).

>>> env = describe_environment(torch.device("cpu"), threads=1)
>>> env["device"], env["threads"], env["torch"] == torch.__version__
('cpu', 1, True)
"""

from __future__ import annotations

import contextlib
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import native
from .._version import __version__

__all__ = ["ENVIRONMENT_FIELDS", "cpu_capability", "cpu_name", "describe_environment"]

#: The fields of the record, in order (each one can change a run's numbers).
ENVIRONMENT_FIELDS = (
    "spikelottery",
    "torch",
    "numpy",
    "python",
    "platform",
    "cpu",
    "cpu_capability",
    "device",
    "cuda",
    "cudnn",
    "threads",
    "deterministic",
    "cudnn_deterministic",
    "cudnn_benchmark",
)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("model name", "Hardware", "cpu model"):
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_capability() -> str | None:
    """The vector instruction set of torch's CPU kernels (``ATEN_CPU_CAPABILITY`` lowers it).

    Two CPUs with different instruction sets (AVX512 against AVX2) sum in different
    orders, so the same run can round differently on them.
    """
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return str(get()) if callable(get) else None


def describe_environment(device: torch.device, *, threads: int) -> dict[str, Any]:
    """The ``environment`` record of a run on ``device`` at ``threads`` intra-op threads.

    Args:
        device: Where the run computed.
        threads: The intra-op CPU threads it used.

    Returns:
        ``spikelottery``, ``torch``, ``numpy`` and ``python`` versions, ``platform``
        (OS and architecture), ``cpu`` (model name), ``cpu_capability`` (the vector
        instructions torch's CPU kernels use: ``"AVX512"``, ``"AVX2"``, ...), ``device`` (``"cpu"`` or the GPU's
        name), ``cuda`` and ``cudnn`` versions (``None`` on CPU), ``threads``,
        ``deterministic`` (``torch.are_deterministic_algorithms_enabled()``),
        ``cudnn_deterministic`` and ``cudnn_benchmark``: the fields of
        :data:`ENVIRONMENT_FIELDS`. Also ``native_kernels``: whether the score-mask layers
        could use :mod:`spikelottery.native`'s kernels; they give the same numbers as
        the eager path, bit for bit, so it is not one of those fields.
    """
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else device.type
    cudnn = torch.backends.cudnn.version() if gpu and torch.backends.cudnn.is_available() else None
    return {
        "spikelottery": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version() or sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}".strip(),
        "cpu": cpu_name(),
        "cpu_capability": cpu_capability(),
        "device": name,
        "cuda": torch.version.cuda if gpu else None,
        "cudnn": cudnn,
        "threads": int(threads),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "native_kernels": native.available(),
    }
