"""Ticket file sizes for the zoo: dense ``torch.save`` vs ``mp`` and ``lt`` tickets at pa = 0.4.

Run from the repository root::

    PYTHONPATH=src python benchmarks/ticket_sizes.py

For each model the dense float32 ``state_dict`` is saved with :func:`torch.save`, then the
model is sparsified at ``pa = 0.4`` and saved with :func:`spikelottery.tickets.save_ticket`
in mode ``"mp"`` (mask + kept signs + alpha) and mode ``"lt"`` (mask + kept float32
weights). Spikformers are measured twice: with every layer sparsified, and with only the
ConvPEP (``patch_embed``) sparsified, the paper's MultiSp setting, where the transformer
blocks are stored as ordinary float32 tensors. Sizes are exact byte counts; they do not
depend on the random weights.
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from spikelottery import sparsify
from spikelottery.layers import SubnetLayer
from spikelottery.models import create_model
from spikelottery.tickets import save_ticket

MODELS = ("vgg9", "resnet19", "spikformer_tiny", "spikformer_small")
_ITEMSIZE = {"U8": 1, "F16": 2, "BF16": 2, "F32": 4, "F64": 8}


def _dense_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def _ticket_bytes(
    name: str, mode: str, pa: float, only: str | None, folder: Path
) -> tuple[int, int, int]:
    """(file size, masked weights, bytes of the score-mask layers' own tensors)."""
    model = sparsify(create_model(name), pa, mode=mode, filter=only)
    masked = sum(m.weight.numel() for m in model.modules() if isinstance(m, SubnetLayer))
    path = save_ticket(model, folder / f"{name}-{mode}.safetensors")
    with safe_open(path, "pt") as f:
        slices = [f.get_slice(k) for k in f.keys() if not k.startswith("state/")]  # noqa: SIM118
        own = sum(math.prod(t.get_shape()) * _ITEMSIZE[t.get_dtype()] for t in slices)
    return path.stat().st_size, masked, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--pa", type=float, default=0.4)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.models:
            torch.manual_seed(0)
            dense_model = create_model(name)
            params = sum(p.numel() for p in dense_model.parameters())
            dense = _dense_bytes(dense_model)
            del dense_model
            scopes = [("whole model", None)]
            if name.startswith("spikformer"):
                scopes.append(("patch_embed only", "patch_embed"))
            for scope, only in scopes:
                mp, masked, mp_own = _ticket_bytes(name, "mp", args.pa, only, folder)
                lt, _, lt_own = _ticket_bytes(name, "lt", args.pa, only, folder)
                rows.append((name, scope, params, masked, dense, mp, mp_own, lt, lt_own))

    print(f"pa = {args.pa:g}; sizes in bytes; ratio = dense torch.save size / ticket size\n")
    header = (
        "| model | sparsified | params | masked weights | dense torch.save | mp ticket | "
        "mp ratio | mp bits/weight | lt ticket | lt ratio | lt bits/weight |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, scope, params, masked, dense, mp, mp_own, lt, lt_own in rows:
        print(
            f"| {name} | {scope} | {params:,} | {masked:,} | {dense:,} | {mp:,} | "
            f"{dense / mp:.1f}x | {8 * mp_own / masked:.2f} | {lt:,} | {dense / lt:.2f}x | "
            f"{8 * lt_own / masked:.2f} |"
        )
    print(
        "\nbits/weight: the score-mask layers' own tensors (mask, signs, alpha or kept "
        "weights) per masked weight; biases, BatchNorm and unsparsified layers come on top."
    )


if __name__ == "__main__":
    main()
