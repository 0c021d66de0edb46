"""The native kernels against the eager path: the same masks, weights, alpha and score
gradients, bit for bit, from any hint and at any thread count; and how they are built.

The reference is the eager definition: ``topk_mask_kthvalue`` (one ``kthvalue``, ties at
the threshold to the earliest positions), ``mp_alpha`` and ``precompute_subnet``, and
``torch.sign(s) * W * grad`` for the score gradient.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch import nn

from spikelottery import native, sparsify
from spikelottery.layers import SubnetLayer
from spikelottery.masks import float_mask, mp_alpha, precompute_subnet, topk_mask_kthvalue
from spikelottery.ratios import kept_count, ratio_for_count

CC = os.environ.get("CC") or "cc"
needs_native = pytest.mark.skipif(
    shutil.which(CC) is None,
    reason=f"no C compiler ({CC!r}) on PATH: the native kernels cannot be built here; the "
    "eager path they fall back to is what every other test checks",
)
PALETTES = {
    "normal": None,
    "levels": [0.5, -0.5, 1.0, -1.0, 2.0, 0.25, -0.25],  # heavy ties
    "signed zeros": [0.0, -0.0, 1e-3, -1e-3, 2.0],
    "denormals": [1e-40, -1e-40, 3e-42, 0.0, -1e-45, 1e-38],
    "all equal": [0.75],
    "wide": [3.0e38, -3.0e38, 1e-30, 5.0, -1e10, 1e-44],
}


def _scores(kind: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    palette = PALETTES[kind]
    if palette is None:
        return torch.randn(n, generator=g)
    values = torch.tensor(palette, dtype=torch.float64)
    return values[torch.randint(len(palette), (n,), generator=g)].float()


def _weight(n: int, seed: int) -> torch.Tensor:
    w = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1))
    w[:: max(n // 7, 1)] = -0.0  # signed zeros, whose sign "mp" must not keep
    w[1 :: max(n // 5, 1)] = 0.0
    return w


def _reference(scores: torch.Tensor, weight: torch.Tensor, keep: int, mode: str):
    mask = topk_mask_kthvalue(scores, ratio_for_count(scores.numel(), keep))
    alpha = mp_alpha(weight, mask, keep) if mode == "mp" else None
    weff, _ = precompute_subnet(scores, weight, float_mask(mask, weight.dtype), alpha)
    return mask, alpha, weff


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _assert_same(got: native.NativeWeight, scores, weight, keep: int, mode: str) -> None:
    mask, alpha, weff = _reference(scores, weight, keep, mode)
    assert torch.equal(_bits(got.weight), _bits(weff))  # signed zeros included
    if mode == "mp":
        assert got.alpha is not None and torch.equal(_bits(got.alpha), _bits(alpha))
    else:
        assert got.alpha is None
    if got.mask is not None:
        assert torch.equal(got.mask, mask)


@needs_native
def test_the_kernels_build_and_load_here() -> None:
    assert native.available(), native.unavailable_reason()
    assert native.unavailable_reason() is None


@needs_native
@settings(max_examples=60)
@given(
    kind=st.sampled_from(sorted(PALETTES)),
    n=st.integers(native.MIN_NUMEL, 20000),
    pa=st.floats(0.0, 0.99),
    mode=st.sampled_from(["lt", "mp"]),
    hint=st.sampled_from(["none", "last", "far", "wide", "random"]),
    seed=st.integers(0, 10_000),
)
def test_the_selection_and_weight_equal_the_reference(
    kind: str, n: int, pa: float, mode: str, hint: str, seed: int
) -> None:
    scores, weight = _scores(kind, n, seed), _weight(n, seed)
    keep = kept_count(n, pa)
    if keep == n:  # pa = 0: the eager path's business
        assert native.native_subnet_weight(scores, weight, keep, mode) is None
        return
    first = native.native_subnet_weight(scores, weight, keep, mode, with_mask=True)
    assert first is not None
    _assert_same(first, scores, weight, keep, mode)
    guesses = {
        "none": None,
        "last": first.hint,
        "far": (0x7F000000 if first.hint[0] < 0x40000000 else 1, 1 << 10),
        "wide": (first.hint[0], 1 << 30),  # every entry inside: more than a thread may note
        "random": (seed * 104729 % 0x7F7FFFFF, seed % (1 << 20) + 1),
    }
    moved = scores + 1e-3 * torch.randn(n, generator=torch.Generator().manual_seed(seed + 2))
    again = native.native_subnet_weight(moved, weight, keep, mode, hint=guesses[hint])
    assert again is not None
    _assert_same(again, moved, weight, keep, mode)


@needs_native
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_many_threads_give_the_same_bits_with_ties_across_their_shares(
    threads: int, mode: str
) -> None:
    n = 200_003  # above the kernels' parallel threshold, not a multiple of the threads
    scores, weight = _scores("levels", n, 7), _weight(n, 7)
    keep = kept_count(n, 0.37)  # the threshold falls among thousands of equal scores
    before = torch.get_num_threads()
    try:
        results = []
        for t in (1, threads):
            torch.set_num_threads(t)
            got = native.native_subnet_weight(scores, weight, keep, mode, with_mask=True)
            assert got is not None
            _assert_same(got, scores, weight, keep, mode)
            hinted = native.native_subnet_weight(scores, weight, keep, mode, hint=got.hint)
            assert hinted is not None
            _assert_same(hinted, scores, weight, keep, mode)
            results.append(got)
        assert torch.equal(_bits(results[0].weight), _bits(results[1].weight))
    finally:
        torch.set_num_threads(before)


@needs_native
@pytest.mark.parametrize("with_hint", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_scores_raise_the_reference_error(bad: float, with_hint: bool) -> None:
    n = 5000
    scores, weight = _scores("normal", n, 3), _weight(n, 3)
    hint = native.native_subnet_weight(scores, weight, 2000, "lt").hint if with_hint else None
    scores[[10, 4000]] = bad
    with pytest.raises(ValueError) as ours:
        native.native_subnet_weight(scores, weight, 2000, "lt", hint=hint)
    with pytest.raises(ValueError) as reference:
        topk_mask_kthvalue(scores, ratio_for_count(n, 2000))
    assert str(ours.value) == str(reference.value)
    assert "2 NaN or infinite value(s) of 5000" in str(ours.value)


@needs_native
def test_a_non_finite_weight_computes_as_the_reference_or_falls_back() -> None:
    n = 4096
    scores, weight = _scores("normal", n, 5), _weight(n, 5)
    weight[[0, 1, 2]] = torch.tensor([float("inf"), float("-inf"), float("nan")])
    lt = native.native_subnet_weight(scores, weight, 1000, "lt")
    assert lt is not None  # W * M: NaN where an infinite weight is removed, as in eager
    _, _, weff = _reference(scores, weight, 1000, "lt")
    torch.testing.assert_close(lt.weight, weff, rtol=0, atol=0, equal_nan=True)
    assert native.native_subnet_weight(scores, weight, 1000, "mp") is None  # alpha: eager


@needs_native
def test_the_score_gradient_equals_the_eager_product() -> None:
    n = 70_000
    g = torch.Generator().manual_seed(11)
    grad, weight, scores = (torch.randn(n, generator=g) for _ in range(3))
    scores[:50] = torch.tensor([0.0, -0.0, float("nan"), 1e-45, -1e-45] * 10)
    grad[50:60] = torch.tensor([float("inf"), -0.0, 1e-40, float("nan"), 0.0] * 2)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got = native.native_score_grad(grad, weight, scores)
            assert got is not None
            ref = torch.sign(scores).mul_(weight).mul_(grad)
            torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)
            finite = ~ref.isnan()
            assert torch.equal(_bits(got)[finite], _bits(ref)[finite])
    finally:
        torch.set_num_threads(before)


def test_other_tensors_take_the_eager_path() -> None:
    s, w = torch.randn(600, 10), torch.randn(600, 10)
    assert native.native_subnet_weight(s.double(), w.double(), 100, "lt") is None
    assert native.native_subnet_weight(s.t(), w.t(), 100, "lt") is None  # not contiguous
    assert native.native_subnet_weight(s[:5], w[:5], 10, "lt") is None  # under MIN_NUMEL
    assert native.native_subnet_weight(s, w, 6000, "lt") is None  # keeps everything
    assert native.native_score_grad(s.half(), w.half(), s.half()) is None
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # no storage behind them: nothing to hand to C
        fake = torch.empty(600, 10)
        assert native.native_subnet_weight(fake, fake.clone(), 100, "lt") is None


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 8 * 8, 96)  # 98304 weights: the kernels' parallel passes
        self.fc2 = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(F.relu(self.conv(x)).flatten(1))))


def _search(mode: str, steps: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = sparsify(_Net(), 0.45, mode=mode)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    layers = [m for m in net.modules() if isinstance(m, SubnetLayer)]
    return [p.detach().clone() for p in net.parameters()] + [m.mask() for m in layers]


@needs_native
@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_a_search_is_the_same_bit_for_bit_with_and_without_the_kernels(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spikelottery.subnet as subnet_module

    calls = {"native": 0}
    real = native.native_subnet_weight

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["native"] += out is not None
        return out

    monkeypatch.setattr(subnet_module, "native_subnet_weight", counted)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast = _search(mode, 25)
        assert calls["native"] >= 2 * 25  # the kernels really ran (both big layers, each step)
        monkeypatch.setenv(native.ENV_SWITCH, "0")
        assert not native.available()
        eager = _search(mode, 25)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(fast, eager, strict=True))


def test_the_switch_turns_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert not native.available()
    assert native.unavailable_reason() == f"switched off: {native.ENV_SWITCH}=0"
    s, w = torch.randn(4096), torch.randn(4096)
    assert native.native_subnet_weight(s, w, 100, "lt") is None


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A loader that has loaded nothing yet, with its own cache folder."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("SPIKELOTTERY_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_without_a_compiler_the_layers_compute_as_before(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "spikelottery-no-such-compiler")
    assert not native.available()
    assert "spikelottery-no-such-compiler" in str(native.unavailable_reason())
    torch.manual_seed(0)
    layer = SubnetLayer.from_dense(nn.Linear(64, 32), 0.5, mode="mp")
    mask, alpha, weff = _reference(layer.scores, layer.frozen_weight, layer.kept, "mp")
    assert torch.equal(layer.weight, weff) and torch.equal(layer.mask(), mask)
    assert torch.equal(layer.alpha(), alpha)


@needs_native
def test_a_build_lands_in_the_cache_and_a_damaged_one_is_rebuilt(fresh: Path) -> None:
    assert native.available()
    built = sorted((fresh / "kernels").glob("*.so"))
    assert len(built) == 1 and not list((fresh / "kernels").glob(".*tmp"))
    damaged = built[0].with_suffix(".damaged")  # a new file: this process maps the old one
    damaged.write_bytes(b"not a library")
    os.replace(damaged, built[0])
    # a new process (this one's loader returns the library it has, whatever the file holds)
    code = "import spikelottery.native as n; assert n.available(), n.unavailable_reason()"
    env = {**os.environ, "SPIKELOTTERY_CACHE_DIR": str(fresh)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert built[0].stat().st_size > 1000  # the damaged file was built again


@needs_native
@pytest.mark.skipif(not hasattr(os, "getuid"), reason="file ownership is a POSIX notion")
def test_a_library_others_may_write_is_not_loaded(fresh: Path) -> None:
    assert native.available()
    (built,) = (fresh / "kernels").glob("*.so")
    built.chmod(0o666)  # anyone could have put their own code there
    code = (
        "import spikelottery.native as n; assert n.available(), n.unavailable_reason();"
        "print(n._state['lib']._name)"
    )
    env = {**os.environ, "SPIKELOTTERY_CACHE_DIR": str(fresh)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    loaded = Path(out.stdout.strip())
    assert loaded.name == built.name and loaded.parent != built.parent  # a private build
    assert not loaded.parent.exists()  # and its folder is gone again


@needs_native
def test_an_unwritable_cache_folder_gives_a_private_build(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fresh / "a file").write_text("")  # a folder that cannot be made, whoever runs this
    monkeypatch.setenv("SPIKELOTTERY_CACHE_DIR", str(fresh / "a file" / "cache"))
    assert native.available(), native.unavailable_reason()
    assert sorted(p.name for p in fresh.iterdir()) == ["a file"]


@needs_native
def test_a_build_is_writable_by_its_owner_only_whatever_the_umask(fresh: Path) -> None:
    old = os.umask(0o002)  # a cluster's usual group-writable default
    try:
        assert native.available()
    finally:
        os.umask(old)
    (built,) = (fresh / "kernels").glob("*.so")
    assert built.stat().st_mode & 0o777 == 0o755


@needs_native
def test_two_processes_building_at_once_both_load(tmp_path: Path) -> None:
    code = "import spikelottery.native as n; assert n.available(), n.unavailable_reason()"
    env = {**os.environ, "SPIKELOTTERY_CACHE_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert len(list((tmp_path / "kernels").glob("*.so"))) == 1
    assert not list((tmp_path / "kernels").glob(".*"))  # no temporary file left behind


@needs_native
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
def test_one_openmp_runtime_serves_torch_and_the_kernels() -> None:
    code = (
        "import torch, spikelottery.native as n; assert n.available();"
        "n.native_score_grad(*(torch.randn(70000) for _ in range(3)));"
        "print(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'gomp' in l}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(eval(out.stdout)) <= 1, out.stdout  # two runtimes would oversubscribe the cores


@needs_native
def test_a_private_build_leaves_no_folder_behind(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"  # a cache that cannot be made: a private build
    blocked.write_bytes(b"")
    temp = tmp_path / "tmp"
    temp.mkdir()
    code = (
        "import torch, spikelottery.native as n; assert n.available(), n.unavailable_reason();"
        "print(n.native_score_grad(*(torch.ones(1024) for _ in range(3))).sum().item())"
    )
    env = {**os.environ, "SPIKELOTTERY_CACHE_DIR": str(blocked), "TMPDIR": str(temp)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "1024.0"  # the kernels ran from the removed folder
    assert list(temp.iterdir()) == []


@needs_native
def test_cc_may_be_a_command_line(tmp_path: Path) -> None:
    # as make reads it (CC="ccache gcc", CC="gcc -m64"): not one program's name
    code = "import spikelottery.native as n; assert n.available(), n.unavailable_reason()"
    env = {**os.environ, "SPIKELOTTERY_CACHE_DIR": str(tmp_path), "CC": f"{CC} -w"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
