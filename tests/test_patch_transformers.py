"""Patch pruning on third-party vision transformers: prefix tokens, position embeddings,
and layouts refused when the selector is attached (issue 9, part 5)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from _networks import timm_vit, tv_swin, tv_vit
from spikelottery import SpikeLotteryError, check_ticket, sparsify
from spikelottery.functional import kept_count
from spikelottery.patch import attach_patch_selector, find_patch_selectors


def _first_block_input(blocks: nn.Module, model: nn.Module, x: Tensor) -> Tensor:
    seen: list[Tensor] = []
    handle = blocks.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    model(x)
    handle.remove()
    return seen[0]


def test_timm_vit_keeps_its_class_token_and_position_embedding() -> None:
    pytest.importorskip("timm")
    x = torch.randn(2, 3, 32, 32)
    dense = timm_vit().eval()
    full = _first_block_input(dense.blocks[0], dense, x)  # [B, 1 + 16, D], pos embed added
    torch.manual_seed(0)
    model, report = sparsify(timm_vit().eval(), 0.4, 0.3, return_report=True)
    assert report.patch_embed == "patch_drop"
    [(name, selector)] = find_patch_selectors(model)
    assert name == "patch_drop" and selector.num_prefix_tokens == 1
    with torch.no_grad():
        pruned = _first_block_input(model.blocks[0], model, x)
    k = kept_count(16, 0.3)
    assert pruned.shape == (2, 1 + k, full.shape[-1])
    # The kept tokens are the strongest patches with their own position embedding: the
    # same tokens the dense network computes, at the selected positions.
    torch.manual_seed(0)
    dense_ref = sparsify(timm_vit().eval(), 0.4)  # same init, same masks, no pruning
    with torch.no_grad():
        unpruned = _first_block_input(dense_ref.blocks[0], dense_ref, x)
    idx = selector.last_indices
    assert torch.equal(pruned[:, 0], unpruned[:, 0])  # the class token, never dropped
    gathered = unpruned[:, 1:].gather(1, idx[..., None].expand(-1, -1, unpruned.shape[-1]))
    assert torch.equal(pruned[:, 1:], gathered)
    scores = (unpruned[:, 1:]).abs().sum(-1)
    assert torch.equal(idx, scores.topk(k, dim=1).indices.sort(dim=1).values)
    assert model(x).shape == (2, 10)
    assert check_ticket(model, x).ok


def test_timm_vit_explicit_patch_embed_is_refused_with_the_right_place() -> None:
    pytest.importorskip("timm")
    with pytest.raises(
        SpikeLotteryError, match=r"(?s)position embedding.*patch_embed='patch_drop'"
    ):
        attach_patch_selector(timm_vit(), 0.3, patch_embed="patch_embed")


def test_timm_patch_embed_without_flatten_is_refused_at_attach() -> None:
    pytest.importorskip("timm")
    from timm.layers import PatchEmbed

    class GridNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = PatchEmbed(32, 8, 3, 16, flatten=False)
            self.head = nn.Linear(16, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.patch_embed(x).mean((2, 3)))

    with pytest.raises(SpikeLotteryError, match=r"NCHW grid.*tokens"):
        sparsify(GridNet(), 0.4, 0.3)


def test_torchvision_vit_keeps_its_class_token() -> None:
    pytest.importorskip("torchvision")
    model = sparsify(tv_vit().eval(), 0.4, 0.5)
    [(name, selector)] = find_patch_selectors(model)
    assert name == "encoder.dropout" and selector.num_prefix_tokens == 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = _first_block_input(model.encoder.layers[0], model, x)
    assert tokens.shape[1] == 1 + kept_count(16, 0.5)
    expected_cls = model.class_token[0, 0] + model.encoder.pos_embedding[0, 0]
    torch.testing.assert_close(tokens[:, 0], expected_cls.expand(2, -1))
    assert model(x).shape == (2, 10)


def test_swin_channels_last_is_refused_at_attach_not_at_forward() -> None:
    pytest.importorskip("torchvision")
    model = tv_swin()
    with pytest.raises(SpikeLotteryError, match=r"(?s)features\.0.*channels-last \[B, H, W, D\]"):
        attach_patch_selector(model, 0.3, patch_embed="features.0")
    assert find_patch_selectors(model) == []
    with pytest.raises(SpikeLotteryError, match="could not find the patch embedding"):
        sparsify(tv_swin(), 0.4, 0.3)  # no patch embedding named as such


def test_explicit_prefix_tokens_on_a_user_model() -> None:
    class ClsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Linear(4, 8)
            self.cls = nn.Parameter(torch.full((1, 1, 8), 100.0))
            self.head = nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:  # x: [B, N, 4]
            tokens = self.patch_embed(x)
            self.seen = tokens.shape[1]
            return self.head(tokens.mean(1))

    model = sparsify(ClsNet(), 0.4, 0.5, num_prefix_tokens=1)
    [(_, selector)] = find_patch_selectors(model)
    assert selector.num_prefix_tokens == 1
    model(torch.randn(2, 9, 4))
    assert model.seen == 1 + kept_count(8, 0.5)
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        sparsify(ClsNet(), 0.4, num_prefix_tokens=1)  # without pb
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        sparsify(ClsNet(), 0.4, 0.3, num_prefix_tokens=-1)
