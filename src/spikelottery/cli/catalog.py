"""``spikelottery models`` and ``spikelottery datasets``: what the registries hold.

Both lists read the registries (:data:`spikelottery.models.MODELS`,
:data:`spikelottery.data.DATASETS`), so a plugin's registrations (``--plugin``) appear.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from .._table import format_rows
from .common import dims, print_json

__all__ = ["LIST_KINDS", "datasets_command", "list_command", "models_command"]


def _model_rows() -> list[dict[str, Any]]:
    """Every zoo model at :func:`~spikelottery.models.create_model`'s defaults."""
    import torch

    from ..models import create_model, list_models

    defaults = {
        name: q.default
        for name, q in inspect.signature(create_model).parameters.items()
        if q.default is not inspect.Parameter.empty
    }
    size = defaults["img_size"]
    height, width = (size, size) if isinstance(size, int) else size
    rows = []
    for name in list_models():
        with torch.device("meta"):  # shapes only: no memory, no random initialisation
            model = create_model(name)
        rows.append(
            {
                "name": name,
                "class": type(model).__name__,
                "parameters": sum(p.numel() for p in model.parameters()),
                "input_shape": [defaults["in_channels"], height, width],
                "timesteps": defaults["timesteps"],
                "num_classes": defaults["num_classes"],
            }
        )
    return rows


def models_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery models``: the zoo, with parameters and input shapes."""
    rows = _model_rows()
    if args.json:
        print_json(rows)
        return 0
    header = ["model", "class", "parameters", "input", "T", "classes"]
    cells = [
        [
            r["name"],
            r["class"],
            f"{r['parameters']:,}",
            dims(r["input_shape"]),
            str(r["timesteps"]),
            str(r["num_classes"]),
        ]
        for r in rows
    ]
    print("\n".join(format_rows(header, cells, numeric=[2, 4, 5])))
    print(
        "\nAt create_model's defaults (a run shapes the model for its data set); the ANN twins\n"
        "(spiking=False) have the same parameters."
    )
    return 0


def _dataset_rows() -> list[dict[str, Any]]:
    from ..data import DATASETS, dataset_info

    rows = []
    for name, spec in DATASETS.items():
        info = dataset_info(name)
        train, test = spec.split_sizes or (None, None)
        rows.append(
            {
                "name": name,
                "num_classes": info.num_classes,
                "input_shape": list(info.input_shape),
                "event": info.is_event,
                "timesteps": info.timesteps,
                "embedded": not info.needs_root,
                "train": train,
                "test": test,
            }
        )
    return rows


def datasets_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery datasets``: the data sets, with classes, sample shape and split sizes."""
    rows = _dataset_rows()
    if args.json:
        print_json(rows)
        return 0
    header = ["dataset", "classes", "sample", "kind", "train", "test", "files"]
    cells = [
        [
            r["name"],
            str(r["num_classes"]),
            dims(r["input_shape"]),
            "events TxCxHxW" if r["event"] else "image CxHxW",
            "?" if r["train"] is None else f"{r['train']:,}",
            "?" if r["test"] is None else f"{r['test']:,}",
            "embedded" if r["embedded"] else "--data-root",
        ]
        for r in rows
    ]
    print("\n".join(format_rows(header, cells, numeric=[1, 4, 5])))
    return 0


def _method_rows() -> list[dict[str, Any]]:
    from ..engine import METHODS

    return [
        {
            "name": name,
            "settings": dict(p.fixed),
            "defaults": dict(p.defaults),
            "paper": p.column,
            "description": p.description,
        }
        for name, p in METHODS.items()
    ]


def _search_rows() -> list[dict[str, Any]]:
    from ..engine import SEARCH_METHODS, search_method

    search_method("scores")  # the library's are registered
    return [
        {
            "name": name,
            "modes": list(cls.modes),
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "description": cls.description,
        }
        for name, cls in SEARCH_METHODS.items()
    ]


def _hardware_rows() -> list[dict[str, Any]]:
    from ..energy.hardware import HARDWARE_PRESETS

    short: dict[str, list[str]] = {}
    for alias, name in HARDWARE_PRESETS.aliases().items():
        short.setdefault(name, []).append(alias)
    return [
        {
            "name": name,
            "aliases": short.get(name, []),
            "e_mac_pj": p.e_mac,
            "e_ac_pj": p.e_ac,
            "bits": p.bits,
            "source": p.source,
        }
        for name, p in HARDWARE_PRESETS.items()
    ]


#: ``spikelottery list KIND``: what each kind lists (every list reads its registry).
LIST_KINDS: dict[str, Any] = {
    "models": _model_rows,
    "datasets": _dataset_rows,
    "methods": _method_rows,
    "searches": _search_rows,
    "hardware": _hardware_rows,
}


def list_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery list KIND``: the registered names of one registry, one per line
    (``models`` and ``datasets`` as their own commands print them)."""
    if args.kind == "models":
        return models_command(parser, args)
    if args.kind == "datasets":
        return datasets_command(parser, args)
    rows = LIST_KINDS[args.kind]()
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        extra = r.get("description") or r.get("source") or ""
        aliases = f" (also {', '.join(r['aliases'])})" if r.get("aliases") else ""
        print(f"{r['name']}{aliases}: {extra}" if extra else r["name"] + aliases)
    return 0
