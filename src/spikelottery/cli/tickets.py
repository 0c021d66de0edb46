"""``spikelottery info``, ``evaluate``, ``energy`` and ``export``: a ticket file's commands.

``info`` reads the file only; the others rebuild the run's model from the ticket's
metadata and load the ticket into it (:mod:`spikelottery.cli.rebuild`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .._table import format_rows
from ..errors import NoSpikingLayerWarning, SpikeLotteryError
from .common import dims, print_json
from .rebuild import Rebuilt, engine_net, prepare, read_run, read_ticket, rebuild

if TYPE_CHECKING:
    import torch

    from ..tickets import TicketInfo

__all__ = [
    "EXPORT_FORMATS",
    "energy_command",
    "evaluate_command",
    "export_command",
    "info_command",
]

# The --to formats of ``spikelottery export``.
EXPORT_FORMATS = ("dense", "onnx", "nir")


def _kept(ticket: TicketInfo) -> tuple[int, int]:
    """Weights kept by the ticket's layers, and their weights in all."""
    kept = sum(layer["kept"] for layer in ticket.layers)
    total = sum(math.prod(layer["shape"]) for layer in ticket.layers)
    return kept, total


def _config_summary(text: str) -> str:
    """A run's config (JSON) as its non-default fields, ``key=value`` separated by spaces."""
    from ..engine.config import field_defaults

    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        return text if len(text) <= 200 else text[:200] + "..."
    defaults = field_defaults()
    changed = {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}
    return " ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or "(all defaults)"


def _metadata_order(key: str) -> tuple[int, str]:
    """The engine's entries first (the long run config last), then the others by name."""
    engine = ("model", "dataset", "seed", "accuracy")
    if key in engine:
        return (engine.index(key) - len(engine), "")
    return (1, "") if key == "config" else (0, key)


def info_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery info``: describe a ticket file without loading it."""
    ticket = read_ticket(parser, args.ticket)
    kept, total = _kept(ticket)
    if args.json:
        record = dataclasses.asdict(ticket)
        record["path"] = str(ticket.path)
        record.update(kept=kept, weights=total, kept_fraction=kept / total if total else None)
        print_json(record)
        return 0
    if ticket.pb > 0:
        patches = f"pb={ticket.pb:g} after {ticket.patch_embed!r}"
        if ticket.patch_layout is not None:
            patches += f", layout {ticket.patch_layout!r}"
        if ticket.num_prefix_tokens is not None:
            patches += f", {ticket.num_prefix_tokens} prefix tokens never pruned"
    else:
        patches = "none (pb=0)"
    share = f" ({100 * kept / total:.2f}%)" if total else ""
    lines = [
        ("ticket", str(ticket.path)),
        (
            "format",
            f"spikelottery ticket v{ticket.format_version}, {ticket.size_bytes:,} bytes, "
            f"written by spikelottery {ticket.library_version}",
        ),
        ("mode", f"{ticket.mode} (pa={ticket.pa:g})"),
        ("kept", f"{kept:,} of {total:,} weights{share} in {len(ticket.layers)} layers"),
        ("patches", patches),
        (
            "stored",
            f"weight dtype {ticket.weight_dtype}; scores "
            + ("included" if ticket.include_scores else "not included"),
        ),
    ]
    for key, value in sorted(ticket.metadata.items(), key=lambda kv: _metadata_order(kv[0])):
        shown = _config_summary(value) if key == "config" else value
        lines.append((f"user.{key}", shown))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    header = ["layer", "class", "shape", "pa", "mode", "kept", "of", "kept %"]
    cells = []
    for layer in ticket.layers:
        n = math.prod(layer["shape"])
        cells.append(
            [
                layer["name"],
                layer["class"],
                dims(layer["shape"]),
                f"{layer['pa']:g}",
                layer["mode"],
                f"{layer['kept']:,}",
                f"{n:,}",
                f"{100 * layer['kept'] / n:.2f}" if n else "-",
            ]
        )
    print()
    print("\n".join(format_rows(header, cells, numeric=[3, 5, 6, 7])))
    return 0


def _recorded_accuracy(ticket: TicketInfo) -> float | None:
    """The test accuracy that the run recorded in the ticket's metadata, if any."""
    try:
        return float(ticket.metadata["accuracy"])
    except (KeyError, ValueError):
        return None


def evaluate_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery evaluate``: the ticket's accuracy and loss on a test split."""
    from .._state import finite_or_none
    from ..engine import evaluate

    m = prepare(parser, args)
    accuracy, loss = evaluate(m.net, m.loader, device=m.device, max_batches=m.batches)
    recorded = _recorded_accuracy(m.rebuilt.ticket)
    if args.json:
        print_json(
            {
                "ticket": args.ticket,
                "dataset": m.config.dataset,
                "samples": m.samples,
                "accuracy": finite_or_none(accuracy),
                "loss": finite_or_none(loss),
                "recorded_accuracy": recorded,
                "threads": m.threads.to_dict(),
            }
        )
        return 0
    line = (
        f"accuracy {100 * accuracy:.2f}% | loss {loss:.4f} | {m.samples:,} samples of the "
        f"{m.config.dataset!r} test split"
    )
    if recorded is not None:
        run = m.rebuilt.config
        line += f" | the run recorded {100 * recorded:.2f}%"
        if run.max_batches is not None:
            line += f" on {run.max_batches} batches of {run.batch_size}"
    print(line)
    return 0


def energy_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery energy``: the ticket's energy per sample, measured on test batches."""
    from .._state import finite_or_none
    from ..energy import estimate_energy

    m = prepare(parser, args)
    batches = m.batches if m.batches is not None else m.config.energy_batches
    # As the engine measures it: the run's hardware preset, the ANN reference once per
    # distinct input frame, and an ANN (no spiking layer by design) gets its ANN figures.
    spiking = getattr(m.net, "spiking", m.config.spiking)
    with warnings.catch_warnings():
        if not spiking:
            warnings.simplefilter("ignore", NoSpikingLayerWarning)
        report = estimate_energy(
            m.net, m.loader, max_batches=batches, preset=m.config.energy_preset
        )
    sparse = report.reprice(density_scaling=True)
    energy, energy_sparse = (
        (report.snn_mj, sparse.snn_mj) if spiking else (report.ann_mj, sparse.ann_mj)
    )
    if args.json:
        print_json(
            {
                "ticket": args.ticket,
                "dataset": m.config.dataset,
                "samples": report.samples,
                "energy_mj": energy,
                "energy_sparse_mj": energy_sparse,
                "ann_reference_mj": report.ann_mj,
                "firing_rate": finite_or_none(report.mean_rate) if spiking else None,
                "threads": m.threads.to_dict(),
                "report": report.to_dict() if spiking else report.ann_dict(),
            }
        )
        return 0
    print(report)
    print(
        f"\nenergy per sample: {energy:.6f} mJ ({'SNN' if spiking else 'ANN'}); "
        f"{energy_sparse:.6f} mJ if pruned weights do no work (density_scaling) | "
        f"{report.samples:,} samples of the {m.config.dataset!r} test split"
    )
    return 0


def export_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery export``: the ticket baked into a dense state_dict or an ONNX graph."""
    out = Path(args.out)
    if not out.parent.is_dir():
        parser.error(f"argument --out: the folder {str(out.parent)!r} does not exist")
    if out.is_dir() or str(args.out).endswith(("/", os.sep)):
        parser.error(f"argument --out: {args.out!r} is a folder; give a file name")
    if out.exists() and out.resolve() == Path(args.ticket).resolve():
        parser.error(f"argument --out: {args.out!r} is the ticket itself")
    if out.exists() and not _is_export(out, args.to):
        parser.error(
            f"argument --out: {args.out!r} exists and is not an earlier --to {args.to} export "
            "(a run's results, a ticket?); choose a new file name or delete it first"
        )
    rebuilt = rebuild(args.ticket, *read_run(parser, args.ticket))
    note = " (patch pruning is not applied)" if rebuilt.ticket.pb > 0 else ""
    if args.to == "dense":
        n, size = _export_dense(rebuilt, out, args.ticket)
        print(f"{out}: the dense model's state_dict, {n} tensors, {size:,} bytes{note}")
        print(
            "load it with safetensors.torch.load_file into the run's dense zoo model "
            "(the file's metadata holds the run config)"
        )
    elif args.to == "nir":
        _export_nir(rebuilt, out)
    else:
        example = _export_onnx(rebuilt, out)
        print(
            f"{out}: ONNX graph of the dense model for input 'input' of shape "
            f"{list(example.shape)} (one sample), output 'logits'{note}"
        )
    return 0


def _is_export(path: Path, to: str) -> bool:
    """``path`` is a file that ``spikelottery export --to <to>`` wrote (safe to replace)."""
    if to == "onnx":
        from ..tickets.export import is_onnx_export

        return is_onnx_export(path)
    if to == "nir":
        from ..nir.export import is_nir_export

        return is_nir_export(path)
    import safetensors

    try:
        with safetensors.safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not safetensors at all: results.json, checkpoint.pt, ...
        return False
    return meta.get("format") == "spikelottery.dense"


def _export_dense(rebuilt: Rebuilt, out: Path, ticket_path: str) -> tuple[int, int]:
    """Write the dense model's ``state_dict`` (safetensors, atomically); tensors and bytes."""
    import safetensors.torch

    from .._io import atomic_write_bytes
    from ..tickets import densify

    dense = densify(rebuilt.model, copy=True, patches="remove")
    # Clones: safetensors refuses tensors that share memory (tied weights).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in dense.state_dict().items()}
    metadata = {
        **rebuilt.ticket.metadata,
        "format": "spikelottery.dense",
        "ticket": Path(ticket_path).name,
    }
    data = safetensors.torch.save(tensors, metadata=metadata)
    atomic_write_bytes(out, data)
    return len(tensors), len(data)


def _export_onnx(rebuilt: Rebuilt, out: Path) -> torch.Tensor:
    """Write the ONNX graph for one sample of the run's data set; the example input."""
    import torch

    from ..tickets import export_onnx

    example = torch.rand(1, *rebuilt.shape.input_shape)
    try:
        with warnings.catch_warnings():
            # The tracer warns at every Python branch on a shape: the graph is for this
            # input shape, which the command prints.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            export_onnx(
                engine_net(rebuilt), out, example, input_names=["input"], output_names=["logits"]
            )
    except ImportError as exc:
        raise SpikeLotteryError(
            f"--to onnx needs the onnx package ({exc}); install it: pip install onnx"
        ) from None
    return example


def _export_nir(rebuilt: Rebuilt, out: Path) -> None:
    """Write the ticket as a NIR graph and say what it holds and how to run it."""
    import torch

    try:
        from ..nir import export_nir
    except ImportError as exc:  # pragma: no cover - nir is in the [nir] extra
        raise SpikeLotteryError(
            f"--to nir needs the nir package ({exc}); install it: pip install 'spikelottery[nir]'"
        ) from None
    result = export_nir(rebuilt.model, torch.zeros(1, *rebuilt.shape.input_shape), out)
    counts = ", ".join(f"{n} {k}" for k, n in result.counts.items())
    print(
        f"{out}: NIR graph of one time step, input {list(result.sample_shape)}, {counts} nodes, "
        f"{result.size_bytes:,} bytes; feed the input at each of T={result.timesteps} steps "
        f"with dt={result.graph.metadata['dt']:g} s (snnTorch's; norse.torch.from_nir(g, dt=...)) "
        "and average the output over T"
    )
