"""Every figure of docs/energy.md: the example report, the options, the three energy views,
the per-layer tables, the memory parts of VGG-9 (dense SNN and its pa = 0.4 binarised
ticket), the VGG-9 MAC count and the arithmetic on the paper's figures.

Run from the repository root (CPU, well under a minute)::

    python docs/_scripts/energy_views.py

An untrained VGG-9 (``create_model("vgg9")``, T = 4) with its BatchNorm statistics
calibrated on 16 random images, measured on 8 of them; the ticket is
``sparsify(model, pa=0.4, mode="mp")``, recalibrated the same way. Prints each block of
the page between ``<!-- energy_views.py: NAME -->`` and ``<!-- end -->`` markers, as the
page holds them; ``tests/test_energy_docs.py`` checks that the page and this output agree.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spikelottery import sparsify
from spikelottery.energy import EnergyReport, count_ops, estimate_energy
from spikelottery.energy._memory import ASSUMPTIONS
from spikelottery.models import create_model

TICKET = "MPSLT pa=0.4 (mp)"


def calibrate(model: nn.Module, images: torch.Tensor) -> None:
    """BatchNorm running statistics from one pass over ``images`` (cumulative average)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def views_block(reports: dict[str, EnergyReport]) -> str:
    lines = [
        "| network | view | E_SNN mJ | ANN fp32 mJ | SNN % of fp32 | ANN int8 mJ | SNN % of int8 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, report in reports.items():
        for v in report.views():
            lines.append(
                f"| {label} | {v['view']} | {v['snn_mj']:.4f} | {v['ann_fp32_mj']:.4f} | "
                f"{v['pct_fp32']:.1f}% | {v['ann_int8_mj']:.4f} | {v['pct_int8']:.1f}% |"
            )
    return "\n".join(lines)


def layers_block(label: str, report: EnergyReport) -> str:
    lines = [
        f"**{label}**, per layer:",
        "",
        "| layer | paper formula ops | exact ops | exact / formula | formula mJ | exact mJ | "
        "weight reads mJ | weight bits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        ratio = r.exact_ops / r.ops if r.ops else math.nan
        lines.append(
            f"| {r.name} | {r.op} {r.ops:,.0f} | {r.exact_op} {r.exact_ops:,.0f} | {ratio:.3f} | "
            f"{r.snn_mj:.6f} | {r.exact_mj:.6f} | {r.memory_pj / 1e9:.6f} | "
            f"{'1' if r.binarised else '32'} |"
        )
    steps = ", ".join(f"{s / 1e6:.2f}M" for s in report.per_step_synops)
    total = report.exact_sops + report.exact_macs
    lines += [
        "",
        f"exact operations per time step: {steps} (sum {sum(report.per_step_synops) / 1e6:.2f}M "
        f"= the exact total {total / 1e6:.2f}M); neuron updates {report.neuron_updates:,.0f} "
        f"(activation sparsity {report.activation_sparsity:.3f})",
    ]
    return "\n".join(lines)


def memory_block(reports: dict[str, EnergyReport]) -> str:
    lines = [
        "| network | weights | mask | membranes | activations | memory-aware E_SNN (headline) "
        "| every weight at 32 bits | every weight at 1 bit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, report in reports.items():
        parts = report.memory_parts()
        like = report.memory_like_for_like()
        lines.append(
            f"| {label} | {parts['weights']:.4f} | {parts['mask']:.4f} | "
            f"{parts['membranes']:.4f} | {parts['activations']:.4f} | "
            f"{like['memory_snn_mj']:.4f} | {like['memory_32bit_mj']:.4f} | "
            f"{like['memory_1bit_mj']:.4f} |"
        )
    dense, ticket = reports.values()
    d32, t32 = dense.memory_like_for_like(), ticket.memory_like_for_like()
    lines += [
        "",
        f"* headline (each at its own weight width): dense / ticket = "
        f"{d32['memory_snn_mj'] / t32['memory_snn_mj']:.2f}x",
        f"* both at 32-bit weights: {d32['memory_32bit_mj'] / t32['memory_32bit_mj']:.2f}x",
        f"* both at 1-bit weights (the dense net binarised too): "
        f"{d32['memory_1bit_mj'] / t32['memory_1bit_mj']:.2f}x",
    ]
    for label, report in reports.items():
        lines.append(f"* {label}: {report.memory_footprint()['text']}")
    lines += ["", "| part | assumption | source |", "|---|---|---|"]
    lines += [f"| {p} | {a} | {s} |" for p, a, s in ASSUMPTIONS]
    return "\n".join(lines)


def options_block(dense: EnergyReport, ticket: EnergyReport) -> str:
    rows = [
        ("`e_mac`, `e_ac`", "4.6 pJ, 0.9 pJ", "any energy per op, or `preset=`", dense.snn_mj),
        (
            "`first_layer_times_t`",
            "`False`: a first layer fed an image counted once per distinct frame",
            "`True`: once per time step",
            dense.reprice(first_layer_times_t=True).snn_mj,
        ),
        (
            "`nonbinary_as_mac`",
            "`False`: a non-binary input pays SOPs at its mean absolute value",
            "`True`: a MAC per weight and time step",
            dense.reprice(nonbinary_as_mac=True).snn_mj,
        ),
        (
            "`density_scaling`",
            "`False`: dense FLOPs",
            "`True`: FLOPs times weight density (the pa = 0.4 ticket)",
            ticket.reprice(density_scaling=True).snn_mj,
        ),
        ("`preset`", "`fp32-45nm`", "`int8-45nm`", dense.reprice(preset="int8").snn_mj),
        ("`preset`", "`fp32-45nm`", "`fp16-45nm`", dense.reprice(preset="fp16").snn_mj),
    ]
    lines = [
        "| option | default | alternative | E_SNN of the example, alternative (mJ) |",
        "|---|---|---|---:|",
    ]
    lines += [f"| {a} | {b} | {c} | {v:.4f} |" for a, b, c, v in rows]
    pooled = dense.reprice(pooled_inputs="values")
    lines += [
        "",
        f"Default E_SNN {dense.snn_mj:.4f} mJ (paper formula); the ticket with dense FLOPs "
        f"{ticket.snn_mj:.4f} mJ. Exact view: {dense.exact_snn_mj:.4f} mJ with pooled spikes "
        f"priced per spike (`pooled_inputs=\"spikes\"`), {pooled.exact_snn_mj:.4f} mJ at their "
        f"pooled value (`\"values\"`).",
    ]
    return "\n".join(lines)


def macs_block() -> str:
    """The VGG-9 and ResNet-19 MAC counts (one image, one step) and the paper's arithmetic."""
    model = create_model("vgg9", timesteps=1)
    counts = count_ops(model, (torch.rand(1, 3, 32, 32), torch.zeros(1)))
    lines = ["| layer | shape | MACs | ANN mJ (4.6 pJ) |", "|---|---|---:|---:|"]
    for c in counts:
        lines.append(f"| {c.name} | {c.shape} | {c.macs:,.0f} | {4.6 * c.macs / 1e9:.4f} |")
    total = sum(c.macs for c in counts)
    lines.append(f"| **total** | | **{total:,.0f}** | **{4.6 * total / 1e9:.4f}** |")
    paper_ann, paper_snn, paper_mpslt = 0.708, 0.093, 0.079
    first = counts[0].macs
    sops = (paper_snn * 1e9 - 4.6 * first) / 0.9
    sops_t = (paper_mpslt * 1e9 - 4.6 * first) / 0.9
    lines += [
        "",
        f"* the paper's ANN: {paper_ann} mJ / 4.6 pJ = {paper_ann * 1e9 / 4.6 / 1e6:.1f}M MACs",
        f"* the first layer: {first / 1e6:.2f}M MACs x 4.6 pJ = {4.6 * first / 1e9:.4f} mJ",
        f"* the paper's dense SNN, {paper_snn} mJ: {sops / 1e6:.1f}M SOPs, a mean rate of "
        f"{sops / (4 * (total - first)):.3f} over this VGG-9's T x FLOPs at T = 4",
        f"* the paper's MPSLT, {paper_mpslt} mJ: {sops_t / 1e6:.1f}M SOPs "
        f"({100 * (1 - sops_t / sops):.1f}% fewer)",
    ]
    big_conv = max(c.macs for c in counts)
    fewer = total - big_conv
    fc = counts[-2].macs + counts[-1].macs
    wide = fewer - fc + 4096 * 256 + 256 * 10
    lines += [
        f"* one 3x3 conv of {big_conv / 1e6:.1f}M MACs fewer: {fewer / 1e6:.1f}M MACs "
        f"({4.6 * fewer / 1e9:.3f} mJ)",
        f"* six convs and a 4096 -> 256 -> 10 classifier: {wide / 1e6:.1f}M MACs "
        f"({4.6 * wide / 1e9:.4f} mJ)",
    ]
    resnet = count_ops(create_model("resnet19", timesteps=1), torch.rand(1, 3, 32, 32))
    res_total = sum(c.macs for c in resnet)
    lines.append(
        f"* ResNet-19 (`create_model(\"resnet19\")`): {res_total:,.0f} MACs per 32x32 image "
        f"({4.6 * res_total / 1e9:.2f} mJ as an ANN)"
    )
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    """The page's generated blocks by name."""
    torch.manual_seed(0)
    model = create_model("vgg9")  # T = 4
    calib, images = torch.rand(16, 3, 32, 32), torch.rand(8, 3, 32, 32)
    calibrate(model, calib)
    dense = estimate_energy(model, images)
    sparsify(model, pa=0.4, mode="mp")
    calibrate(model, calib)
    ticket = estimate_energy(model, images)
    reports = {"dense SNN": dense, TICKET: ticket}
    return {
        "example": f"```text\n{dense}\n```",
        "options": options_block(dense, ticket),
        "views": views_block(reports),
        "layers": layers_block("dense SNN", dense) + "\n\n" + layers_block(TICKET, ticket),
        "memory": memory_block(reports),
        "macs": macs_block(),
    }


def main() -> None:
    for name, text in blocks().items():
        print(f"<!-- energy_views.py: {name} -->\n{text}\n<!-- end -->\n")


if __name__ == "__main__":
    main()
