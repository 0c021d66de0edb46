"""Draw the landing page's pipeline figure as two SVG files (run once, commit the output).

    python docs/_scripts/pipeline_figure.py

writes ``docs/_static/pipeline.svg`` (five steps in a row, for wide screens) and
``docs/_static/pipeline-narrow.svg`` (the same steps stacked, for phones). Only the
standard library is used, and the random draws are seeded, so the files are the same on
every run.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "_static"

SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
INK = "#1e293b"
MUTED = "#475569"
GREY = "#64748b"
PLUS = "#2563eb"
MINUS = "#ea580c"
PATCH = "#7c3aed"
KEPT_BAR = "#16a34a"

PA, PB = 0.4, 0.3
rng = random.Random(7)
WEIGHTS = [rng.gauss(0.0, 1.0) for _ in range(25)]  # a 5x5 "layer"
SCORES = [rng.random() for _ in range(25)]
N_REMOVED = math.floor(PA * 25)  # 10: the kept count is n - floor(pa * n)
_order = sorted(range(25), key=lambda i: SCORES[i])
REMOVED = set(_order[:N_REMOVED])
PATCH_MAG = [rng.random() for _ in range(16)]  # a 4x4 grid of patches
P_REMOVED = set(sorted(range(16), key=lambda i: PATCH_MAG[i])[: math.floor(PB * 16)])
# The paper's energy figures for VGG-9 on CIFAR10 (mJ per image): ANN, dense SNN, MPSLT.
BARS = (("ANN", 0.708, "#94a3b8"), ("SNN", 0.093, PLUS), ("ticket", 0.079, KEPT_BAR))

STEPS = (
    ("Dense random", "network", ("W frozen at", "random init")),
    ("Score-mask", "search (pa)", ("keep the top", "n − ⌊pa·n⌋ |scores|")),
    ("Binarised", "ticket", ("w = α·sign(W)·M", "one α per layer")),
    ("Patch", "pruning (pb)", ("keep the N − ⌊pb·N⌋", "strongest patches")),
    ("Energy", "estimate", ("4.6 pJ per MAC,", "0.9 pJ per spike")),
)


def _text(
    x: float,
    y: float,
    s: str,
    size: float,
    *,
    weight: str = "normal",
    fill: str = INK,
    anchor: str = "middle",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" '
        f'fill="{fill}" text-anchor="{anchor}">{s}</text>'
    )


def _weight_grid(x: float, y: float, step: int) -> list[str]:
    """Step 1: every weight, its grey level its magnitude; 2: removed ones dashed; 3: signs."""
    out = []
    cell, gap = 16, 3
    for i, w in enumerate(WEIGHTS):
        cx, cy = x + (i % 5) * (cell + gap), y + (i // 5) * (cell + gap)
        if step >= 2 and i in REMOVED:
            out.append(
                f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" rx="2" '
                'fill="#ffffff" stroke="#94a3b8" stroke-dasharray="3 2"/>'
            )
        elif step == 3:
            colour, mark = (PLUS, "+") if w >= 0 else (MINUS, "−")
            out.append(
                f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" rx="2" fill="{colour}"/>'
            )
            out.append(
                _text(cx + cell / 2, cy + cell / 2 + 4.5, mark, 13, weight="bold", fill="#ffffff")
            )
        else:
            alpha = 0.2 + 0.75 * min(abs(w) / 2.0, 1.0)
            out.append(
                f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" rx="2" '
                f'fill="{GREY}" fill-opacity="{alpha:.2f}"/>'
            )
    return out


def _patches(x: float, y: float) -> list[str]:
    out = []
    cell, gap = 21, 3
    for i, m in enumerate(PATCH_MAG):
        cx, cy = x + (i % 4) * (cell + gap), y + (i // 4) * (cell + gap)
        if i in P_REMOVED:
            out.append(
                f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" rx="2" '
                'fill="#f1f5f9" stroke="#94a3b8"/>'
            )
            out.append(
                f'<path d="M{cx + 5} {cy + 5}L{cx + cell - 5} {cy + cell - 5}'
                f'M{cx + cell - 5} {cy + 5}L{cx + 5} {cy + cell - 5}" '
                'stroke="#94a3b8" stroke-width="2"/>'
            )
        else:
            alpha = 0.3 + 0.65 * m
            out.append(
                f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" rx="2" '
                f'fill="{PATCH}" fill-opacity="{alpha:.2f}"/>'
            )
    return out


def _bars(x: float, y: float) -> list[str]:
    """Bar heights proportional to the paper's VGG-9 figures (0.708, 0.093, 0.079 mJ)."""
    out = []
    base, top = y + 78, 74
    for k, (label, mj, colour) in enumerate(BARS):
        h = max(top * mj / BARS[0][1], 2.0)
        bx = x + 4 + k * 31
        out.append(
            f'<rect x="{bx}" y="{base - h:.1f}" width="22" height="{h:.1f}" '
            f'rx="2" fill="{colour}"/>'
        )
        out.append(_text(bx + 11, base + 15, label, 11, fill=MUTED))
    out.append(f'<path d="M{x} {base}H{x + 96}" stroke="{GREY}"/>')
    return out


def _illustration(k: int, x: float, y: float) -> list[str]:
    """The 92x92 drawing of step k with its top-left corner at (x, y)."""
    if k < 3:
        return _weight_grid(x, y, k + 1)
    if k == 3:
        return _patches(x, y)
    return _bars(x - 2, y)


def _arrow(x1: float, y1: float, x2: float, y2: float) -> str:
    return (
        f'<path d="M{x1:.1f} {y1:.1f}L{x2:.1f} {y2:.1f}" stroke="{GREY}" '
        'stroke-width="2.5" marker-end="url(#arrow)"/>'
    )


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="{SANS}" role="img">',
        f"<title>{title}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="5" '
        f'markerHeight="5" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" '
        f'fill="{GREY}"/></marker></defs>',
        # An opaque card, so that the drawing reads on furo's dark theme too.
        f'<rect width="{width}" height="{height}" rx="12" fill="#ffffff"/>',
    ]
    return "\n".join([*head, *body, "</svg>"]) + "\n"


TITLE = (
    "The spikelottery pipeline: a dense random spiking network; a score-mask search "
    "that removes pa of the weights; the binarised ticket alpha*sign(W)*M; patch pruning "
    "that removes pb of the patches; and the energy estimate."
)


def wide() -> str:
    pad, pw, ph, gap = 12, 168, 236, 30
    body = []
    for k, (t1, t2, caption) in enumerate(STEPS):
        x = pad + k * (pw + gap)
        body.append(
            f'<rect x="{x}" y="{pad}" width="{pw}" height="{ph}" rx="10" '
            'fill="#f8fafc" stroke="#cbd5e1"/>'
        )
        cx = x + pw / 2
        body.append(_text(cx, pad + 28, t1, 17, weight="bold"))
        body.append(_text(cx, pad + 50, t2, 17, weight="bold"))
        body.extend(_illustration(k, cx - 46, pad + 68))
        body.append(_text(cx, pad + 192, caption[0], 14, fill=MUTED))
        body.append(_text(cx, pad + 211, caption[1], 14, fill=MUTED))
        if k < len(STEPS) - 1:
            body.append(_arrow(x + pw + 4, pad + 114, x + pw + gap - 5, pad + 114))
    return _svg(pad * 2 + 5 * pw + 4 * gap, ph + 2 * pad, body, TITLE)


def narrow() -> str:
    pad, pw, ph, gap = 8, 360, 116, 26
    body = []
    for k, (t1, t2, caption) in enumerate(STEPS):
        y = pad + k * (ph + gap)
        body.append(
            f'<rect x="{pad}" y="{y}" width="{pw}" height="{ph}" rx="10" '
            'fill="#f8fafc" stroke="#cbd5e1"/>'
        )
        body.extend(_illustration(k, pad + 14, y + 12))
        tx = pad + 124
        body.append(_text(tx, y + 34, f"{t1} {t2}", 17, weight="bold", anchor="start"))
        body.append(_text(tx, y + 64, caption[0], 15, fill=MUTED, anchor="start"))
        body.append(_text(tx, y + 86, caption[1], 15, fill=MUTED, anchor="start"))
        if k < len(STEPS) - 1:
            body.append(_arrow(pad + 60, y + ph + 3, pad + 60, y + ph + gap - 4))
    return _svg(pw + 2 * pad, 5 * ph + 4 * gap + 2 * pad, body, TITLE)


if __name__ == "__main__":
    (STATIC / "pipeline.svg").write_text(wide(), encoding="utf-8")
    (STATIC / "pipeline-narrow.svg").write_text(narrow(), encoding="utf-8")
    print(f"wrote {STATIC / 'pipeline.svg'} and {STATIC / 'pipeline-narrow.svg'}")
