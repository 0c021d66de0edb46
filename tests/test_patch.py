"""Patch pruning: select_patches properties, PatchSelector, attaching to real models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from spikelottery import load_ticket, save_ticket, sparsify
from spikelottery._validation import kept_count
from spikelottery.errors import SpikeLotteryError
from spikelottery.patch import (
    PatchSelector,
    attach_patch_selector,
    find_patch_selectors,
    select_patches,
)

pb_values = st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.6, 0.9, 0.99])


@st.composite
def token_inputs(draw):
    layout = draw(st.sampled_from(["bnd", "tbnd", "tbdhw"]))
    t, b, d = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    prefix = draw(st.integers(0, 2)) if layout != "tbdhw" else 0
    if layout == "tbdhw":
        h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        shape, n = (t, b, d, h, w), h * w
    else:
        n = draw(st.integers(1, 12))
        shape = (b, prefix + n, d) if layout == "bnd" else (t, b, prefix + n, d)
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return x, layout, prefix, n


def _tokens(x, layout):
    """Reference [T, B, N, D] view, written independently of the library."""
    if layout == "bnd":
        return x[None]
    if layout == "tbnd":
        return x
    t, b, d = x.shape[:3]
    return x.reshape(t, b, d, -1).permute(0, 1, 3, 2)


@settings(max_examples=60, deadline=None)
@given(inp=token_inputs(), pb=pb_values)
def test_selection_properties(inp, pb):
    x, layout, prefix, n = inp
    kept, idx = select_patches(x, pb, num_prefix_tokens=prefix, layout="auto")
    k = kept_count(n, pb)
    b = _tokens(x, layout).shape[1]
    assert idx.shape == (b, k) and idx.dtype == torch.int64
    # original order, no repeats
    assert bool((idx[:, 1:] > idx[:, :-1]).all())
    tok = _tokens(x, layout)
    patches = tok[:, :, prefix:]
    scores = patches.abs().sum(dim=(0, 3))  # [B, N]
    for i in range(b):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[idx[i]] = True
        if k < n:  # every kept patch is at least as strong as every dropped one
            assert scores[i][mask].min() >= scores[i][~mask].max()
    # values: prefix first, then the chosen patches in order
    out = _tokens(kept, layout) if layout != "tbdhw" else kept.flatten(3).transpose(2, 3)
    if layout == "tbdhw" and k < n:
        assert kept.shape == (*x.shape[:3], 1, k)
    else:
        assert out.shape[2] == prefix + k
    assert torch.equal(out[:, :, :prefix], tok[:, :, :prefix])
    for i in range(b):
        assert torch.equal(out[:, i, prefix:], patches[:, i, idx[i]])


@settings(max_examples=30, deadline=None)
@given(inp=token_inputs(), pb=pb_values)
def test_gradient_reaches_kept_tokens_only(inp, pb):
    x, layout, prefix, n = inp
    x = x.clone().requires_grad_()
    kept, idx = select_patches(x, pb, num_prefix_tokens=prefix)
    upstream = torch.randn_like(kept)
    (kept * upstream).sum().backward()
    grad = _tokens(x.grad, layout)
    g_up = _tokens(upstream, layout) if layout != "tbdhw" else upstream.flatten(3).transpose(2, 3)
    assert torch.equal(grad[:, :, :prefix], g_up[:, :, :prefix])  # prefix tokens: all of it
    for i in range(idx.shape[0]):
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[idx[i]] = False
        assert torch.equal(grad[:, i, prefix:][:, idx[i]], g_up[:, i, prefix:])
        assert not grad[:, i, prefix:][:, dropped].any()


@pytest.mark.parametrize(
    ("shape", "prefix"), [((2, 10, 4), 0), ((3, 2, 11, 4), 1), ((2, 2, 4, 2, 5), 0)]
)
def test_all_zero_tokens_keep_the_first_patches(shape, prefix):
    # Ties are common (spike tokens that are all zero): the earliest patches win.
    _, idx = select_patches(torch.zeros(shape), 0.3, num_prefix_tokens=prefix)
    n = 10
    k = kept_count(n, 0.3)
    assert idx.tolist() == [list(range(k))] * idx.shape[0]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 16),
    b=st.integers(1, 3),
    d=st.integers(1, 3),
    pb=pb_values.filter(lambda p: p > 0),
    seed=st.integers(0, 2**16),
)
def test_ties_keep_the_earliest_among_the_strongest(n, b, d, pb, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, (2, b, n, d), generator=gen).float()  # many equal scores
    kept, idx = select_patches(x, pb)
    k = kept_count(n, pb)
    scores = x.abs().sum(dim=(0, 3))  # exact: sums of small integers
    for i in range(b):
        # reference: strongest first, earlier first among equals; then original order
        ranked = sorted(range(n), key=lambda j: (-scores[i, j].item(), j))
        assert idx[i].tolist() == sorted(ranked[:k])
        assert torch.equal(kept[:, i], x[:, i, idx[i]])


def test_pb_zero_is_identity():
    x = torch.randn(2, 3, 7, 4)
    kept, idx = select_patches(x, 0.0)
    assert kept is x
    assert torch.equal(idx, torch.arange(7).expand(3, 7))


def test_one_selection_serves_all_timesteps():
    # Patch 1 is weak at t=0 but strong overall; patch 0 only at t=0.
    x = torch.zeros(2, 1, 3, 1)
    x[0, 0, 0] = 3.0
    x[0, 0, 1] = 0.5
    x[1, 0, 1] = 4.0
    x[1, 0, 2] = 1.0
    _, idx = select_patches(x, 0.4)  # keep 2 of 3
    assert idx.tolist() == [[0, 1]]
    _, idx = select_patches(x, 0.7)  # keep 1: patch 1 (4.5 over T) beats patch 0 (3)
    assert idx.tolist() == [[1]]


def test_position_embedding_is_added_before_ranking():
    x = torch.tensor([[[1.0], [2.0], [3.0]]])  # [B=1, N=3, D=1]
    pos = torch.tensor([[[5.0], [0.0], [-6.0]]])
    kept, idx = select_patches(x, 0.6, pos_embed=pos)  # keep 2: |6|, |2|, |-3| -> 0 and 2
    assert idx.tolist() == [[0, 2]]
    assert kept.flatten().tolist() == [6.0, -3.0]
    with pytest.raises(ValueError, match="pos_embed"):
        select_patches(x, 0.5, pos_embed=torch.zeros(4, 1))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"pb": 1.0}, ValueError, "pb"),
        ({"pb": -0.1}, ValueError, "pb"),
        ({"pb": 0.5, "layout": "nchw"}, ValueError, "layout"),
        ({"pb": 0.5, "layout": "tbdhw"}, ValueError, "5-D"),
        ({"pb": 0.5, "num_prefix_tokens": 9}, ValueError, "num_prefix_tokens"),
        ({"pb": 0.5, "num_prefix_tokens": 1.0}, TypeError, "num_prefix_tokens"),
        ({"pb": 0.5, "num_prefix_tokens": -1}, ValueError, "num_prefix_tokens=-1"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        select_patches(torch.rand(2, 5, 3), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"pb": 1.0}, ValueError, "pb"),
        ({"num_prefix_tokens": -1}, ValueError, "num_prefix_tokens=-1"),
        ({"num_prefix_tokens": 1.0}, TypeError, "num_prefix_tokens"),
        ({"num_prefix_tokens": True}, TypeError, "num_prefix_tokens"),
        ({"num_prefix_tokens": 1, "layout": "tbdhw"}, ValueError, "num_prefix_tokens"),
        ({"layout": "nchw"}, ValueError, "layout"),
        ({"return_indices": "yes"}, TypeError, "return_indices"),
        ({"return_indices": 1}, TypeError, "return_indices"),
    ],
)
def test_patch_selector_validates_at_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PatchSelector(**{"pb": 0.5, **kwargs})


def test_patch_selector_module():
    sel = PatchSelector(0.3)
    assert "pb=0.3" in repr(sel)
    x = torch.rand(4, 2, 64, 8)
    assert sel(x).shape == (4, 2, 45, 8)
    assert sel.last_indices.shape == (2, 45)
    sel.pb = 0.5
    kept, idx = PatchSelector(0.5, return_indices=True)(x)
    assert kept.shape[2] == 32 and idx.shape == (2, 32)
    with pytest.raises(ValueError, match="pb"):
        sel.pb = 1.5


# --------------------------------------------------------------------------- attaching


class TokenEmbed(nn.Module):
    """[T, B, 3, H, W] -> tokens [T, B, N, D] (the layout of spikelottery.models)."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.proj = nn.Conv2d(3, d, 4, stride=4)  # spatial, but inside the patch embedding

    def forward(self, x):
        t, b = x.shape[:2]
        return self.proj(x.flatten(0, 1)).flatten(2).transpose(1, 2).unflatten(0, (t, b))


class TokenNet(nn.Module):
    def __init__(self, d: int = 8, after: nn.Module | None = None):
        super().__init__()
        self.patch_embed = TokenEmbed(d)
        self.blocks = nn.Linear(d, d) if after is None else after
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        return self.head(self.blocks(self.patch_embed(x)).mean(2))


def test_attach_finds_patch_embed_and_keeps_state_dict():
    net = TokenNet()
    keys = list(net.state_dict())
    assert attach_patch_selector(net, 0.25) == "patch_embed"
    assert list(net.state_dict()) == keys
    assert "(patch_selector): PatchSelector(pb=0.25)" in repr(net)
    x = torch.rand(2, 3, 3, 16, 16)  # 16 patches -> 12 kept
    assert net.patch_embed(x).shape == (2, 3, 12, 8)
    assert net(x).shape == (2, 3, 5)
    sel = net.patch_embed.patch_selector
    assert sel.last_indices.shape == (3, 12)
    # a second call updates pb instead of stacking a second selector
    hooks = len(net.patch_embed._forward_hooks)
    attach_patch_selector(net, 0.5)
    assert net.patch_embed.patch_selector is sel and sel.pb == 0.5
    assert len(net.patch_embed._forward_hooks) == hooks
    assert net.patch_embed(x).shape == (2, 3, 8, 8)
    # pb = 0 detaches: the model is back to its original behaviour
    assert attach_patch_selector(net, 0.0) is None
    assert "patch_selector" not in dict(net.named_children()).get("patch_embed")._modules
    assert not net.patch_embed._forward_hooks
    assert net.patch_embed(x).shape == (2, 3, 16, 8)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_pb_zero_removes_the_selector_and_every_hook():
    class Spatial(nn.Module):  # a 1-row "grid" conv: gets a spatial check hook
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(8, 8, 3, padding=1)

        def forward(self, tok):
            t, b = tok.shape[:2]
            out = self.conv(tok.flatten(0, 1).transpose(1, 2)).transpose(1, 2)
            return out.unflatten(0, (t, b))

    outer = nn.Module()
    outer.net = TokenNet(after=Spatial())
    outer.forward = outer.net.forward
    baseline = _hook_count(outer)
    assert find_patch_selectors(outer) == []
    assert attach_patch_selector(outer, 0.5) == "net.patch_embed"
    ((name, sel),) = find_patch_selectors(outer)
    assert name == "net.patch_embed" and sel is outer.net.patch_embed.patch_selector
    assert _hook_count(outer) >= baseline + 4  # embed, model pre/post, spatial check
    twin = copy.deepcopy(outer)
    assert attach_patch_selector(outer, 0.0) is None
    assert find_patch_selectors(outer) == []
    assert "patch_selector" not in outer.net.patch_embed._modules
    assert _hook_count(outer) == baseline
    assert not any(m._forward_hooks_always_called for m in outer.modules())
    assert outer.net.patch_embed(torch.rand(1, 2, 3, 16, 16)).shape == (1, 2, 16, 8)
    # the copy keeps its own selector until it is switched off too
    assert [n for n, _ in find_patch_selectors(twin)] == ["net.patch_embed"]
    assert twin.net.patch_embed(torch.rand(1, 2, 3, 16, 16)).shape == (1, 2, 8, 8)
    attach_patch_selector(twin, 0.0)
    assert find_patch_selectors(twin) == [] and _hook_count(twin) == baseline
    # switching off again is a no-op
    assert attach_patch_selector(outer, 0.0) is None


def test_pb_zero_on_a_model_without_patch_embedding_is_a_no_op():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    state = copy.deepcopy(net.state_dict())
    assert attach_patch_selector(net, 0.0) is None
    assert attach_patch_selector(net, 0.0, patch_embed=None) is None
    assert find_patch_selectors(net) == [] and _hook_count(net) == 0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    with pytest.raises(SpikeLotteryError, match="could not find the patch embedding"):
        attach_patch_selector(net, 0.3)  # pb > 0 still needs one


def test_find_patch_selectors_ignores_unattached_selectors():
    net = nn.Sequential(nn.Linear(4, 4), PatchSelector(0.5))
    assert find_patch_selectors(net) == []
    with pytest.raises(TypeError, match="nn.Module"):
        find_patch_selectors("model")


def test_explicit_name_and_sequential_patch_embed():
    net = nn.Module()
    net.features = nn.Sequential()
    net.features.stem = nn.Sequential(TokenEmbed(8))
    with pytest.raises(SpikeLotteryError, match='patch_embed="features.stem"'):
        attach_patch_selector(net, 0.5)
    with pytest.raises(SpikeLotteryError, match="not a submodule"):
        attach_patch_selector(net, 0.5, patch_embed="features.nope")
    assert attach_patch_selector(net, 0.5, patch_embed="features.stem") == "features.stem"
    # an nn.Sequential runs the selector as its last child: exactly once, no hook needed
    assert not net.features.stem._forward_hooks
    out = net.features.stem(torch.rand(1, 2, 3, 16, 16))
    assert out.shape == (1, 2, 8, 8)


def test_spatial_layer_after_the_selector_is_an_error():
    class Spatial(nn.Module):  # reshapes tokens back to a 4x4 grid and runs a 3x3 conv
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, tok):
            t, b, n, d = tok.shape
            side = int(n**0.5)
            grid = tok.transpose(2, 3).reshape(t * b, d, side, n // side)
            return self.conv(grid).flatten(2).transpose(1, 2).unflatten(0, (t, b))

    net = TokenNet(after=Spatial())
    x = torch.rand(1, 2, 3, 16, 16)
    assert net(x).shape == (1, 2, 5)  # fine without pruning
    attach_patch_selector(net, 0.5)  # 8 tokens: a 2x4 "grid" would run silently
    with pytest.raises(SpikeLotteryError, match=r"'blocks.conv'.*no longer form an H x W grid"):
        net(x)


def test_downstream_crash_gets_an_explanation():
    class FixedTokens(nn.Module):
        def forward(self, tok):
            return tok.reshape(tok.shape[0], tok.shape[1], 16, -1)  # assumes 16 tokens

    net = TokenNet(after=FixedTokens())
    attach_patch_selector(net, 0.5)
    with pytest.raises(RuntimeError) as info:
        net(torch.rand(1, 2, 3, 16, 16))
    assert any("patch selector after 'patch_embed'" in n for n in info.value.__notes__)


def test_deepcopy_carries_an_independent_selector():
    net = TokenNet()
    attach_patch_selector(net, 0.25)
    twin = copy.deepcopy(net)
    twin.patch_embed.patch_selector.pb = 0.5
    x = torch.rand(1, 2, 3, 16, 16)
    assert net.patch_embed(x).shape[2] == 12
    assert twin.patch_embed(x).shape[2] == 8


# --------------------------------------------------------------------------- real models


def _small_sj_spikformer():
    spikformer = pytest.importorskip("spikingjelly.activation_based.model.spikformer")
    torch.manual_seed(0)
    return spikformer.Spikformer(
        T=2,
        img_size_h=32,
        img_size_w=32,
        patch_size=4,
        num_classes=10,
        embed_dims=32,
        num_heads=2,
        depths=1,
    )


def test_spikingjelly_spikformer_trains_with_sparsify():
    from spikingjelly.activation_based import functional

    from spikelottery import sparsify

    model = _small_sj_spikformer()
    sparsify(model, 0.4, 0.3)
    selector = model.patch_embed.patch_selector
    assert selector.pb == 0.3 and "PatchSelector(pb=0.3" in repr(model)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    scores = {n: p for n, p in model.named_parameters() if n.endswith("scores")}
    before = {n: p.detach().clone() for n, p in scores.items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    logits = model(x).mean(0)  # [T, B, classes] -> [B, classes]
    assert selector.last_indices.shape == (4, 45)  # 64 patches, pb = 0.3
    loss = nn.functional.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    functional.reset_net(model)
    changed = [n for n in scores if not torch.equal(before[n], scores[n])]
    assert any(n.startswith("patch_embed.") for n in changed)
    assert len(changed) >= len(scores) // 2
    # stem output is the one-row grid of kept patches
    assert model.patch_embed(torch.rand(2, 1, 3, 32, 32)).shape == (2, 1, 32, 1, 45)
    functional.reset_net(model)
    # pb = 0 through sparsify switches patch pruning off: every patch reaches the blocks
    sparsify(model, 0.4, 0.0)
    assert all(sel.pb == 0.0 for _, sel in find_patch_selectors(model))
    assert model.patch_embed(torch.rand(2, 1, 3, 32, 32)).shape == (2, 1, 32, 8, 8)
    functional.reset_net(model)
    assert model(x).shape == (2, 4, 10)


def test_spikingjelly_spikformer_with_a_spatial_layer_is_refused():
    model = _small_sj_spikformer()
    model.extra = nn.Conv2d(32, 32, 3, padding=1)
    with pytest.raises(SpikeLotteryError, match="'extra'.*kernel_size=\\(3, 3\\)"):
        attach_patch_selector(model, 0.3)
    assert not hasattr(model.patch_embed, "patch_selector")


def test_zoo_spikformer_runs_on_fewer_tokens():
    from spikelottery import models, sparsify

    net = models.Spikformer(embed_dim=32, depth=1, num_heads=2, timesteps=2)
    sparsify(net, 0.4, 0.3)
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert net.patch_embed.patch_selector.last_indices.shape == (2, 45)


# --- from test_review_cases.py: Regression tests for defects an independent review found on third-party networks.


class ConvViT(nn.Module):
    """The usual hand-written ViT: a Conv2d patch embedding, flattened by the parent."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 8, 8)
        self.head = nn.Linear(d, 10)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        self.tokens = tokens
        return self.head(tokens.mean(1))


def test_d1_a_conv_patch_embedding_is_pruned_as_a_feature_map() -> None:
    torch.manual_seed(0)
    model = sparsify(ConvViT().eval(), 0.4, 0.25)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        full = model.patch_embed(x)  # hooks prune this call too: recompute by hand
    [(_, selector)] = find_patch_selectors(model)
    assert selector.last_indices.shape == (2, kept_count(16, 0.25))
    grid = F.conv2d(x, model.patch_embed.weight, model.patch_embed.bias, stride=8)
    tokens = grid.flatten(2).transpose(1, 2)  # [B, 16, D]: the real patch embeddings
    idx = selector.last_indices
    expected = tokens.gather(1, idx[..., None].expand(-1, -1, tokens.shape[-1]))
    torch.testing.assert_close(model.tokens, expected)
    assert full.shape == (2, 16, 1, kept_count(16, 0.25))


def test_d1_an_ambiguous_4d_output_is_refused_not_guessed() -> None:
    class Square(nn.Module):  # [B, D, H, W] with H = D: cannot be told from [T, B, N, D]
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Conv2d(3, 4, 1)
            self.head = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.patch_embed(x).mean((2, 3)))

    model = sparsify(Square(), 0.4, 0.5)
    with pytest.raises(SpikeLotteryError, match=r"cannot tell.*layout="):
        model(torch.randn(4, 3, 4, 4))


def test_d1_position_embedding_added_after_patch_embed_is_refused_at_attach() -> None:
    class PosAfter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Linear(4, 8)
            self.pos_embed = nn.Parameter(torch.zeros(1, 9, 8))
            self.head = nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head((self.patch_embed(x) + self.pos_embed).mean(1))

    with pytest.raises(SpikeLotteryError, match=r"position embedding.*patch_embed="):
        sparsify(PosAfter(), 0.4, 0.3)


class ClsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, 1 + N, 4], token 0 a class token
        return self.head(self.patch_embed(x)[:, 0])


def test_d2_the_ticket_keeps_prefix_tokens_and_layout(tmp_path) -> None:
    torch.manual_seed(0)
    model = sparsify(ClsNet().eval(), 0.4, 0.5, num_prefix_tokens=1)
    x = torch.randn(2, 9, 4)
    with torch.no_grad():
        want = model(x)
    path = save_ticket(model, tmp_path / "t.safetensors")
    fresh = load_ticket(ClsNet().eval(), path)
    [(_, selector)] = find_patch_selectors(fresh)
    assert selector.num_prefix_tokens == 1
    with torch.no_grad():
        assert torch.equal(fresh(x), want)


def test_tickets_written_before_the_selector_settings_still_load(tmp_path) -> None:
    import safetensors
    import safetensors.torch

    from spikelottery.tickets.format import ticket_digest

    torch.manual_seed(0)
    model = sparsify(ClsNet().eval(), 0.4, 0.5)
    x = torch.randn(2, 9, 4)
    with torch.no_grad():
        want = model(x)
    path = save_ticket(model, tmp_path / "new.safetensors")
    with safetensors.safe_open(path, "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert meta.pop("num_prefix_tokens") == "0" and meta.pop("patch_layout") == "auto"
    meta["sha256"] = ticket_digest(tensors, meta)  # exactly what the first version wrote
    old = tmp_path / "old.safetensors"
    old.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    fresh = load_ticket(ClsNet().eval(), old)
    with torch.no_grad():
        assert torch.equal(fresh(x), want)


def test_r2_a_failed_sparsify_restores_the_patch_selector() -> None:
    class Bypass(nn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            return F.linear(x, self._parameters["weight"], self.bias)

    class Tok(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
            self.head = Bypass(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.patch_embed(x).mean(1))

    model = Tok()
    sparsify(model, 0.5, 0.25, filter="patch_embed")
    with pytest.raises(SpikeLotteryError):
        sparsify(model, 0.5, 0.5, example_inputs=torch.randn(2, 8, 4))
    [(_, selector)] = find_patch_selectors(model)
    assert selector.pb == 0.25 and type(model.head) is Bypass
    fresh = Tok()
    with pytest.raises(SpikeLotteryError):
        sparsify(fresh, 0.5, 0.5, filter=r"^head", example_inputs=torch.randn(2, 8, 4))
    assert find_patch_selectors(fresh) == []


def test_r2_token_batches_as_wide_as_the_embedding_after_the_first() -> None:
    class ConvTokens(nn.Module):  # [T, B, N, D] tokens from a conv, D = 8
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = Embed()
            self.head = nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.patch_embed(x).mean((0, 2)))

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, 8, 4, stride=4)

        def forward(self, x: Tensor) -> Tensor:  # x: [T, B, 3, 16, 16]
            t, b = x.shape[:2]
            return self.proj(x.flatten(0, 1)).flatten(2).transpose(1, 2).unflatten(0, (t, b))

    model = sparsify(ConvTokens(), 0.5, 0.5)
    model(torch.rand(2, 4, 3, 16, 16))  # batch 4: unambiguous, tokens
    model(torch.rand(2, 8, 3, 16, 16))  # batch 8 == D: remembered, not refused
    [(_, selector)] = find_patch_selectors(model)
    assert selector.last_indices.shape == (8, 8)
