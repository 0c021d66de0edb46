"""Native CPU kernels for the per-step work of a score-mask layer.

After every optimizer step each score-mask layer finds its exact top-k mask, alpha
(mode ``"mp"``) and its effective weight; backward computes the score gradient
``grad * W * sign(s)``. In eager PyTorch that is some fifteen memory-bound kernels per
layer (:func:`~spikelottery.masks.topk_mask`'s radix select, the float mask, ``W * M``,
``sign`` and two products), which on a CPU cost a search step 8-33% over dense
training. The C kernels in ``_native_kernels.c`` do it in one to three passes:

* the selection and the effective weight in one pass: from where the threshold was
  after the last step, every entry whose ``|score|`` lies outside a narrow range around
  it is decided (kept above, removed below) and written, the few inside are noted, and
  the exact threshold is found among those. The range follows how far the threshold
  moved. When it moved out of it, and on the first step, two histogram passes over the
  scores' bit patterns (the top 15 bits of ``|s|``, then the low 16 bits inside the one
  bucket that holds the threshold) find it first. No sort, no rounding; NaN and inf
  are counted on the way;
* ``"mp"``: the pass writes the products ``|W| * M``, torch sums them for alpha, and a
  second pass turns them into ``alpha * sign(W) * M`` in place;
* the score gradient, in one pass.

Results: the same masks, bit for bit, as :func:`~spikelottery.masks.topk_mask_kthvalue`
(ties at the threshold broken by position, the earliest kept), the same ``W * M``,
alpha (the same products, summed by torch, as :func:`~spikelottery.masks.mp_alpha`
does) and score gradient bit for bit, whatever the number of threads, and the same
NaN/inf errors. So a search runs the same, step for step, with and without them, and
the eager and the native path can be mixed.

When they run: float32 tensors on the CPU, contiguous, with at least
:data:`MIN_NUMEL` entries, for a layer whose frozen weight does not train. Everything
else (GPU, other dtypes, ``torch.compile`` and ``torch.func`` tracing, fine-tuning the
kept weights) takes the eager path. With OpenMP they run on torch's intra-op threads
(``torch.get_num_threads()``), in the OpenMP runtime torch has loaded.

How they are built: plain C99 with strict IEEE arithmetic, compiled on first use (about
a second) with the machine's C compiler (``$CC``, a command line as make reads it, else
``cc``) into ``$SPIKELOTTERY_CACHE_DIR`` (default ``~/.cache/spikelottery``): written
atomically, named by a hash of the source, the flags and the CPU's features, loaded only
when owned by this user and writable by nobody else (else built again into a private
folder, removed once loaded), and called through :mod:`ctypes`. No compiler, a failed
build or ``SPIKELOTTERY_NATIVE=0`` in the environment: the eager path, with the same
results. :func:`available` says which; the engine records it in ``results.json``
(``environment.native_kernels``).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ._validation import nonfinite_scores_error

__all__ = [
    "ENV_SWITCH",
    "MIN_NUMEL",
    "NativeWeight",
    "available",
    "cache_dir",
    "native_score_grad",
    "native_subnet_weight",
    "unavailable_reason",
]

#: ``SPIKELOTTERY_NATIVE=0`` keeps every layer on the eager path.
ENV_SWITCH = "SPIKELOTTERY_NATIVE"
#: Smaller tensors stay on the eager path, where a call costs less than the ctypes call.
MIN_NUMEL = 512

_SOURCE = Path(__file__).with_name("_native_kernels.c")
# Strict IEEE arithmetic (no -ffast-math, no contraction into FMA), so that the wider
# vectors of -march=native change no result; the library's name carries the CPU's
# flags, so a cache shared by a cluster's nodes holds one build per kind of CPU. OpenMP
# where the compiler has it: the library then uses the OpenMP runtime torch has already
# loaded (the same soname), so torch's threads and ours are one pool. Each set of flags
# is tried in turn.
_BASE = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-strict-aliasing")
_CANDIDATES = (
    ("-march=native", "-fopenmp", *_BASE),
    ("-fopenmp", *_BASE),
    ("-march=native", *_BASE),
    _BASE,
)

_P, _I64, _U32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32
_INT = ctypes.c_int
_SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    "sl_scratch_size": ([_INT], _I64),
    "sl_select": ([_P, _I64, _I64, _INT, _P, _P, _P], _I64),
    "sl_mask": ([_P, _I64, _U32, _I64, _INT, _P], None),
    "sl_write": ([_P, _P, _I64, _U32, _I64, _INT, _INT, _P], None),
    "sl_weight_mp_kept": ([_P, _I64, ctypes.c_float, _INT, _P], None),
    "sl_score_grad": ([_P, _P, _P, _I64, _INT, _P], None),
    "sl_select_write": (
        [_P, _P, _I64, _I64, _U32, _U32, _INT, _INT, _I64, _P, _P, _P, _P, _P, _P],
        _I64,
    ),
}
_MAX_FINITE = 0x7F7FFFFF  # the bits of the largest finite float32
# The guess around the last threshold, in units of its bit pattern (2^23 per binade):
# from 2^10 (0.01%) to 2^26 (eight binades either way).
_GUESS_MIN, _GUESS_MAX = 1 << 10, 1 << 26

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded library or None; "why": the reason if None
_local = threading.local()  # each thread's scratch and output cells: the kernels are reentrant


def cache_dir() -> Path:
    """Where the compiled kernels are kept: ``$SPIKELOTTERY_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/spikelottery``, else ``~/.cache/spikelottery``."""
    own = os.environ.get("SPIKELOTTERY_CACHE_DIR")
    if own:
        return Path(own)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spikelottery"


def _compiler() -> tuple[str, ...]:
    """The compiler's command: ``$CC``, else ``cc``, its program resolved on PATH. ``$CC``
    may be a command line, as make reads it (``"ccache gcc"``, ``"gcc -m64"``)."""
    cc = os.environ.get("CC") or "cc"
    found = shutil.which(cc)
    if found is not None:  # a program, whatever characters its path holds
        return (found,)
    words = shlex.split(cc) if os.name == "posix" else []
    found = shutil.which(words[0]) if words else None
    if found is None:
        raise RuntimeError(f"no C compiler: {cc!r} is not on PATH (set CC to one)")
    return (found, *words[1:])


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), else its name: what -march=native builds for."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _library_path(cc: tuple[str, ...], flags: tuple[str, ...]) -> Path:
    parts = [
        _SOURCE.read_bytes(),
        " ".join(flags).encode(),
        "\0".join(cc).encode(),
        sys.platform.encode(),
    ]
    parts += [platform.machine().encode(), _cpu_flags().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return cache_dir() / "kernels" / f"spikelottery-{key}.so"


def _trusted(path: Path) -> bool:
    """Ours to load: a file owned by this user that nobody else may write."""
    st = path.stat()
    own = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return own and not st.st_mode & 0o022


def _build(cc: tuple[str, ...], flags: tuple[str, ...], path: Path) -> None:
    """Compile the kernels to ``path``: into a temporary file beside it, then renamed
    (whatever the umask, writable by its owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [*cc, *flags, "-o", tmp, str(_SOURCE)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cc)} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _private(cc: tuple[str, ...], flags: tuple[str, ...], name: str) -> ctypes.CDLL:
    """Built in a private folder and loaded; the file goes again (the mapping stays)."""
    folder = Path(tempfile.mkdtemp(prefix="spikelottery-"))
    try:
        _build(cc, flags, folder / name)
        return _open(folder / name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _cached(cc: tuple[str, ...], flags: tuple[str, ...]) -> ctypes.CDLL:
    """The kernels from the cache (built there first if missing, again if damaged); a
    private build when the cache cannot be written or its file is not trusted."""
    path = _library_path(cc, flags)
    try:
        if not path.is_file():
            _build(cc, flags, path)
        if _trusted(path):
            try:
                return _open(path)
            except (OSError, AttributeError):  # a truncated or foreign file
                _build(cc, flags, path)
                return _open(path)
    except OSError:  # the cache folder cannot be written
        pass
    return _private(cc, flags, path.name)


def _compiled(cc: tuple[str, ...]) -> ctypes.CDLL:
    """The kernels built with the first set of flags the compiler takes."""
    errors = []
    for flags in _CANDIDATES:
        try:
            return _cached(cc, flags)
        except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
            errors.append(f"{' '.join(flags[:2])}: {type(exc).__name__}: {exc}")
    raise RuntimeError("; ".join(errors))


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, (args, result) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


def _load() -> ctypes.CDLL | None:
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib, why = None, ""
        try:
            lib = _compiled(_compiler())
        except Exception as exc:  # no compiler, no writable cache, a failed build
            why = f"{type(exc).__name__}: {exc}"
        _state["lib"], _state["why"] = lib, why
        return lib


def _library() -> ctypes.CDLL | None:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    lib = _state.get("lib", False)
    return _load() if lib is False else lib  # type: ignore[return-value]


def available() -> bool:
    """Whether the native kernels are in use here (compiling them on the first call).

    >>> isinstance(available(), bool)
    True
    """
    return _library() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is ``False`` (``None`` when it is ``True``)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"switched off: {ENV_SWITCH}=0"
    if _library() is not None:
        return None
    return str(_state.get("why") or "unknown")


class _Buffers:
    """One thread's working space for the kernels, grown on demand."""

    def __init__(self) -> None:
        self.scratch = torch.empty(0, dtype=torch.int64)
        self.pos = torch.empty(0, dtype=torch.int64)
        self.vals = torch.empty(0, dtype=torch.int32)
        self.counts = torch.empty(0, dtype=torch.int64)
        self.t, self.ties = _U32(), _I64()
        self.threads = 0  # the thread count `scratch` is sized for

    def fit(self, lib: ctypes.CDLL, threads: int, cap: int) -> _Buffers:
        if self.threads != threads:
            size = int(lib.sl_scratch_size(threads))
            if self.scratch.numel() < size:
                self.scratch = torch.empty(size, dtype=torch.int64)
            self.threads = threads
        if self.pos.numel() < threads * cap:
            self.pos = torch.empty(threads * cap, dtype=torch.int64)
            self.vals = torch.empty(threads * cap, dtype=torch.int32)
        if self.counts.numel() < 3 * threads:
            self.counts = torch.empty(3 * threads, dtype=torch.int64)
        return self


def _buffers() -> _Buffers:
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = _Buffers()
    return buffers


def _float32(x: float) -> float:
    """``x`` rounded to float32 (``inf`` past its range). A float32 quotient computed in
    double and rounded so is the correctly rounded float32 quotient (double has over
    2 * 24 + 2 bits), as torch's float32 division gives."""
    try:
        return float(struct.unpack("f", struct.pack("f", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _fits(*tensors: Tensor) -> bool:
    n = tensors[0].numel()
    if n < MIN_NUMEL:
        return False
    for t in tensors:
        if t.dtype != torch.float32 or t.device.type != "cpu" or t.numel() != n:
            return False
        if not t.is_contiguous() or t.is_inference():
            return False
        # plain tensors with memory behind them: not a subclass (a fake tensor, a
        # transform's wrapper), whose data pointer may be missing or null
        if type(t) not in (Tensor, torch.nn.Parameter):
            return False
        try:
            if not t.data_ptr():
                return False
        except RuntimeError:
            return False
    return True


@dataclass(frozen=True)
class NativeWeight:
    """What :func:`native_subnet_weight` computes for one masked weight."""

    weight: Tensor  #: the effective weight, ``W * M`` or ``alpha * sign(W) * M``
    alpha: Tensor | None  #: 0-d gain (mode ``"mp"``), else ``None``
    mask: Tensor | None  #: the bool mask, when asked for
    #: ``(threshold bits, width)``: where the next selection of this tensor looks first
    hint: tuple[int, int]


def native_subnet_weight(
    scores: Tensor,
    weight: Tensor,
    keep: int,
    mode: str,
    *,
    with_mask: bool = False,
    hint: tuple[int, int] | None = None,
) -> NativeWeight | None:
    """The effective weight keeping the ``keep`` largest ``|scores|``, by the native kernels.

    With a ``hint`` (the :attr:`NativeWeight.hint` of this tensor's last selection) one
    pass over the scores decides every entry whose ``|score|`` is outside a narrow range
    around the last threshold, and the threshold is found among the few inside it: the
    selection and the effective weight in one pass, as long as the threshold moves less
    than the range from one step to the next (the range follows how far it moved).
    Otherwise, and without a hint, two histogram passes find it first. Both give the
    same mask, bit for bit.

    Args:
        scores: The layer's scores.
        weight: The frozen weight, same shape.
        keep: How many entries to keep, ``0 < keep < n``.
        mode: ``"lt"`` (``W * M``) or ``"mp"`` (``alpha * sign(W) * M``).
        with_mask: Also return the bool mask (one more pass).
        hint: Where to look first; any value gives the same result.

    Returns:
        The result, or ``None`` where the kernels do not apply (see the module's
        docstring), which the caller computes on the eager path.

    Raises:
        ValueError: the scores hold NaN or inf (the message of
            :func:`~spikelottery.masks.topk_mask`).
    """
    n = scores.numel()
    if not 0 < keep < n or not _fits(scores, weight):
        return None
    lib = _library()
    if lib is None:
        return None
    threads = torch.get_num_threads()
    cap = max(1024, n // (16 * threads))  # entries each thread may note inside the guess
    buf = _buffers().fit(lib, threads, cap)
    t, ties = buf.t, buf.ties
    s, w = scores.detach(), weight.detach()
    sp, wp = s.data_ptr(), w.data_ptr()
    mp = mode == "mp"
    # "lt": the effective weight; "mp": first the products |W| * M that alpha sums
    first = torch.empty_like(w, memory_format=torch.contiguous_format)
    status = -1
    if hint is not None:
        lo, hi = max(hint[0] - hint[1], 0), min(hint[0] + hint[1], _MAX_FINITE)
        status = lib.sl_select_write(
            sp, wp, n, keep, lo, hi, int(mp), threads, cap, buf.pos.data_ptr(),
            buf.vals.data_ptr(), buf.counts.data_ptr(), first.data_ptr(), ctypes.byref(t),
            ctypes.byref(ties),
        )  # fmt: skip
    if status < 0:  # no hint, or the threshold moved out of it: two histogram passes
        scratch = buf.scratch.data_ptr()
        status = lib.sl_select(sp, n, keep, threads, scratch, ctypes.byref(t), ctypes.byref(ties))
        if not status:
            lib.sl_write(sp, wp, n, t.value, ties.value, int(mp), threads, first.data_ptr())
    if status:
        raise nonfinite_scores_error(int(status), n)
    out, alpha = first, None
    if mp:  # alpha as mp_alpha computes it: the same products, summed by torch
        value = _float32(float(first.sum()) / _float32(keep))  # float32 division, exact
        if not math.isfinite(value):  # an infinite frozen weight: the eager path
            return None
        alpha = torch.tensor(value, dtype=torch.float32)
        lib.sl_weight_mp_kept(wp, n, value, threads, first.data_ptr())  # in place
    mask = None
    if with_mask:
        mask = torch.empty(scores.shape, dtype=torch.bool)
        lib.sl_mask(sp, n, t.value, ties.value, threads, mask.data_ptr())
    # The next guess: eight times this move, shrinking slowly after a large one.
    moved, last = (abs(t.value - hint[0]), hint[1]) if hint is not None else (0, 0)
    width = min(max(8 * moved, last // 2, _GUESS_MIN), _GUESS_MAX)
    return NativeWeight(out, alpha, mask, (t.value, width))


def native_score_grad(grad: Tensor, weight: Tensor, scores: Tensor) -> Tensor | None:
    """``grad * (W * sign(scores))`` in one pass (bit for bit the eager product), or
    ``None`` where the kernels do not apply."""
    if not _fits(grad, weight, scores):
        return None
    lib = _library()
    if lib is None:
        return None
    out = torch.empty_like(grad, memory_format=torch.contiguous_format)
    w, s = weight.detach().data_ptr(), scores.detach().data_ptr()
    lib.sl_score_grad(grad.data_ptr(), w, s, grad.numel(), torch.get_num_threads(), out.data_ptr())
    return out
