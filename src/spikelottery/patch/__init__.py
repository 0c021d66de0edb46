"""Patch pruning (paper Algorithm 1, stage 2): keep the strongest patch embeddings.

Each patch (token) is ranked by the magnitude of its embedding: the L1 norm over
channels, summed over time steps so that one selection serves every time step, with the
position embedding added first when one is given. Per sample the top
``N - floor(pb * N)`` patches are kept, in their original order, and the rest are dropped,
so every layer after the patch embedding runs on fewer tokens.

* :func:`select_patches` is the pure function (tokens in, kept tokens and indices out);
* :class:`PatchSelector` is a thin module around it;
* :func:`attach_patch_selector` puts a selector after a model's patch embedding without
  changing its ``state_dict`` (``sparsify(model, pa, pb)`` calls it), and removes it
  again for ``pb = 0``; :func:`find_patch_selectors` lists the attached selectors.

Example:
    >>> import torch
    >>> tokens = torch.rand(4, 2, 64, 32)  # [T, B, N, D]
    >>> kept, idx = select_patches(tokens, 0.3)
    >>> kept.shape, idx.shape
    (torch.Size([4, 2, 45, 32]), torch.Size([2, 45]))
"""

from .attach import PatchPlan, attach_patch_selector, find_patch_selectors, plan_patch_selector
from .select import PatchSelector, select_patches

__all__ = [
    "PatchPlan",
    "PatchSelector",
    "attach_patch_selector",
    "find_patch_selectors",
    "plan_patch_selector",
    "select_patches",
]
