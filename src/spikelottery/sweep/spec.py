"""A sweep SPEC file: ``[base]`` settings, ``[grid]`` axes, ``[[zip]]`` axes varied together.

A SPEC is a TOML file::

    [sweep]                          # optional: shown by --dry-run and the report
    name = "digits-reward1"
    description = "MPSLT against MPLT on the digits"

    [base]                           # run settings shared by every run
    model = "vgg_small"
    epochs = 10

    [grid]                           # every combination of these lists
    method = ["mplt", "mpslt"]
    pa = [0.2, 0.4]
    seed = [0, 1, 2]

    [[zip]]                          # optional: lists of one length, varied together
    timesteps = [1, 4]
    batch_size = [128, 64]

``[grid]`` may also be an array of tables (``[[grid]]``): the plan is the union of the
grids, each crossed with the ``[[zip]]`` axes. Any run setting of
:class:`~spikelottery.engine.TrainConfig` may be an axis, including ``method`` (a preset
of :mod:`spikelottery.engine.presets`) and ``seed``.

>>> spec = SweepSpec(base={"epochs": 1}, grids=[{"pa": [0.2, 0.4], "seed": [0, 1]}])
>>> [(p["pa"], p["seed"]) for p in expand(spec)]
[(0.2, 0), (0.2, 1), (0.4, 0), (0.4, 1)]
"""

from __future__ import annotations

import itertools
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import TrainConfig
from ..errors import SpikeLotteryError

__all__ = ["SpecError", "SweepSpec", "expand", "load_spec"]

_TABLES = ("sweep", "base", "grid", "zip")


class SpecError(SpikeLotteryError):
    """A SPEC file or table is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class SweepSpec:
    """A parsed SPEC: what :func:`expand` turns into runs.

    Attributes:
        base: Settings shared by every run.
        grids: One or more tables of axes (setting -> list of values); each grid is the
            cross product of its axes, and the plan is the union over the grids.
        zips: Tables of equal-length lists; each is one axis whose values are taken
            together (crossed with every grid).
        name: A short name of the sweep.
        description: What the sweep tests, and the numbers it should give.
        source: The file it came from (for messages).
    """

    base: Mapping[str, Any] = field(default_factory=dict)
    grids: Sequence[Mapping[str, Sequence[Any]]] = field(default_factory=lambda: [{}])
    zips: Sequence[Mapping[str, Sequence[Any]]] = field(default_factory=list)
    name: str = ""
    description: str = ""
    source: str = "spec"

    def __post_init__(self) -> None:
        if not self.base and not any(self.grids) and not any(self.zips):
            raise SpecError(
                f"{self.source}: the SPEC sets nothing (no [base] settings, no [grid] or "
                "[[zip]] axes), which would be one run of every default; give at least "
                "[base] with the settings of the run (e.g. model, dataset, epochs)"
            )
        fields = set(TrainConfig.__dataclass_fields__)
        for where, table in [("base", self.base)] + [
            (f"grid[{i}]", g) for i, g in enumerate(self.grids)
        ]:
            _check_keys(self.source, where, table, fields)
        for i, g in enumerate(self.grids):
            _check_axes(self.source, f"grid[{i}]" if len(self.grids) > 1 else "grid", g)
        for i, z in enumerate(self.zips):
            _check_keys(self.source, f"zip[{i}]", z, fields)
            _check_axes(self.source, f"zip[{i}]", z)
            lengths = {k: len(v) for k, v in z.items()}
            if len(set(lengths.values())) > 1:
                raise SpecError(
                    f"{self.source}: the lists of [[zip]] table {i} must have one length, got "
                    + ", ".join(f"{k}: {n}" for k, n in lengths.items())
                )
        zip_keys = [k for z in self.zips for k in z]
        repeated = sorted({k for k in zip_keys if zip_keys.count(k) > 1})
        grid_zip = sorted({k for g in self.grids for k in g} & set(zip_keys))
        if repeated or grid_zip:
            raise SpecError(
                f"{self.source}: setting(s) {', '.join(repeated + grid_zip)} appear in more than "
                "one axis ([grid] and [[zip]], or two [[zip]] tables); give each setting one axis"
            )

    @property
    def axes(self) -> list[str]:
        """Every setting that varies, in the order of the file."""
        out: list[str] = []
        for table in [*self.grids, *self.zips]:
            out += [k for k in table if k not in out]
        return out


def _check_keys(source: str, where: str, table: Mapping[str, Any], fields: set[str]) -> None:
    unknown = [k for k in table if k not in fields]
    if unknown:
        raise SpecError(
            f"{source}: [{where}] has unknown setting(s) {', '.join(map(repr, unknown))}; "
            "valid settings are TrainConfig's fields (spikelottery run --help)"
        )


def _check_axes(source: str, where: str, table: Mapping[str, Any]) -> None:
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise SpecError(
                f"{source}: [{where}] {key} must be a non-empty list of values, got {values!r}"
            )


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Read a SPEC TOML file (see the module docstring).

    Raises:
        SpecError: The file is missing, not TOML, or malformed (naming the table and key).
    """
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"sweep spec {str(p)!r} is a folder; give the path of a .toml file")
    if not p.is_file():
        raise SpecError(f"sweep spec {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"sweep spec {str(p)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"sweep spec {str(p)!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SpecError(f"cannot read sweep spec {str(p)!r}: {exc}") from None
    return spec_from_dict(data, source=str(p))


def spec_from_dict(data: Mapping[str, Any], *, source: str = "spec") -> SweepSpec:
    """A :class:`SweepSpec` from the tables of a parsed SPEC file."""
    unknown = [k for k in data if k not in _TABLES]
    if unknown:
        raise SpecError(
            f"{source}: unknown table(s) {', '.join(map(repr, unknown))}; a SPEC has "
            "[sweep], [base], [grid] (or [[grid]]) and [[zip]]"
        )
    meta = data.get("sweep", {})
    base = data.get("base", {})
    grid = data.get("grid", {})
    grids = grid if isinstance(grid, list) else [grid]
    zips = data.get("zip", [])
    if isinstance(zips, dict):
        zips = [zips]
    for name, value in (("sweep", meta), ("base", base)):
        if not isinstance(value, dict):
            raise SpecError(
                f"{source}: [{name}] must be a table, got {name} = {value!r} "
                f"({type(value).__name__})"
            )
    for name, tables in (("grid", grids), ("zip", zips)):
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise SpecError(
                f"{source}: [{name}] must be a table of lists (or [[{name}]] tables), got "
                f"{name} = {data[name]!r}; write the table's header ("
                + ("[grid]" if name == "grid" else "[[zip]]")
                + ") and a list per line under it, e.g. seed = [0, 1]"
            )
    bad_meta = [k for k in meta if k not in ("name", "description")]
    if bad_meta:
        raise SpecError(f"{source}: [sweep] knows 'name' and 'description', got {bad_meta}")
    return SweepSpec(
        base=dict(base),
        grids=[dict(g) for g in grids] or [{}],
        zips=[dict(z) for z in zips],
        name=str(meta.get("name", "")),
        description=str(meta.get("description", "")).strip(),
        source=source,
    )


def _points(table: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(table)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*table.values())]


def _zipped(table: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(table)
    return [dict(zip(keys, combo, strict=True)) for combo in zip(*table.values(), strict=True)]


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every run's settings (``base`` plus one point of the axes), in a fixed order.

    Duplicates (the same settings from two grids) appear once. The settings are not yet
    validated: :func:`spikelottery.sweep.plan_runs` does that, naming the run.
    """
    zipped = [_zipped(z) for z in spec.zips]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for grid in spec.grids:
        for point in _points(grid):
            for combo in itertools.product(*zipped) if zipped else [()]:
                settings = {**spec.base, **point}
                for part in combo:
                    settings.update(part)
                key = repr(sorted(settings.items()))
                if key not in seen:
                    seen.add(key)
                    out.append(settings)
    return out
