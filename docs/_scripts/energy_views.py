"""The three energy views of docs/energy.md on VGG-9: paper formula, exact synaptic
operations, memory-aware; for the dense SNN and its pa = 0.4 binarised (mp) ticket.

Run from the repository root (CPU, about a minute)::

    python docs/_scripts/energy_views.py

An untrained VGG-9 (``create_model("vgg9")``, T = 4) with its BatchNorm statistics
calibrated on 16 random images, measured on 8 of them; the ticket is
``sparsify(model, pa=0.4, mode="mp")``, recalibrated the same way. Prints Markdown.
"""

from __future__ import annotations

import torch
from torch import nn

from spikelottery import sparsify
from spikelottery.energy import EnergyReport, estimate_energy
from spikelottery.models import create_model


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


def views_rows(label: str, report: EnergyReport) -> list[str]:
    rows = []
    for v in report.views():
        rows.append(
            f"| {label} | {v['view']} | {v['snn_mj']:.4f} | {v['ann_fp32_mj']:.4f} | "
            f"{v['pct_fp32']:.1f}% | {v['ann_int8_mj']:.4f} | {v['pct_int8']:.1f}% |"
        )
    return rows


def layer_rows(report: EnergyReport) -> list[str]:
    rows = []
    for r in report.rows:
        ratio = r.exact_ops / r.ops if r.ops else float("nan")
        rows.append(
            f"| {r.name} | {r.op} {r.ops:,.0f} | {r.exact_op} {r.exact_ops:,.0f} | {ratio:.3f} | "
            f"{r.snn_mj:.6f} | {r.exact_mj:.6f} | {r.memory_pj / 1e9:.6f} | "
            f"{'1' if r.binarised else '32'} |"
        )
    return rows


def main() -> None:
    torch.manual_seed(0)
    model = create_model("vgg9")  # T = 4
    calib, images = torch.rand(16, 3, 32, 32), torch.rand(8, 3, 32, 32)
    calibrate(model, calib)
    dense = estimate_energy(model, images)
    sparsify(model, pa=0.4, mode="mp")
    calibrate(model, calib)
    ticket = estimate_energy(model, images)

    print(
        "| network | view | E_SNN mJ | ANN fp32 mJ | SNN % of fp32 | ANN int8 mJ | SNN % of int8 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for line in views_rows("dense SNN", dense) + views_rows("MPSLT pa=0.4 (mp)", ticket):
        print(line)
    print()
    for label, report in (("dense SNN", dense), ("MPSLT pa=0.4 (mp)", ticket)):
        print(f"**{label}**, per layer:\n")
        print(
            "| layer | paper formula ops | exact ops | exact / formula | formula mJ | "
            "exact mJ | weight reads mJ | weight bits |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for line in layer_rows(report):
            print(line)
        steps = ", ".join(f"{s / 1e6:.2f}M" for s in report.per_step_synops)
        print(
            f"\nsynaptic ops per time step: {steps}; neuron updates {report.neuron_updates:,.0f} "
            f"(activation sparsity {report.activation_sparsity:.3f}); memory term "
            f"{report.memory_mj:.4f} mJ\n"
        )
    print(dense.conventions())
    print("\nThe printed report of the dense SNN:\n")
    print(dense)
    print("\nOptions (E_SNN of the paper formula, mJ):")
    for name, value in (
        ("default", dense.snn_mj),
        ("first_layer_times_t", dense.reprice(first_layer_times_t=True).snn_mj),
        ("nonbinary_as_mac", dense.reprice(nonbinary_as_mac=True).snn_mj),
        ("ticket, dense FLOPs", ticket.snn_mj),
        ("ticket, density_scaling", ticket.reprice(density_scaling=True).snn_mj),
        ("preset int8", dense.reprice(preset="int8").snn_mj),
        ("preset fp16", dense.reprice(preset="fp16").snn_mj),
    ):
        print(f"  {name}: {value:.4f}")


if __name__ == "__main__":
    main()
