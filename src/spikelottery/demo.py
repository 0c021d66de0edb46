"""The demo: the dense SNN, its lottery ticket and its binarised ticket on the embedded digits.

``spikelottery demo`` runs :func:`demo` and prints :func:`format_table`. The names are
also importable from :mod:`spikelottery.engine`.

>>> [cfg.mode for _, cfg in demo_configs(None)]
['dense', 'lt', 'mp']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._table import format_rows
from .engine.config import ConfigError, TrainConfig
from .engine.outputs import check_out
from .engine.results import RESULTS_FILE, write_json
from .engine.trainer import Trainer

__all__ = ["DEMO_EPOCHS", "DEMO_LAYERS", "DEMO_METHODS", "demo", "demo_configs", "format_table"]

#: Epochs per method of ``spikelottery demo``.
DEMO_EPOCHS = 25
#: Feature layers of the demo's VGG (conv widths, ``"A"`` = 2x2 average pool).
DEMO_LAYERS: tuple[int | str, ...] = (64, 64, "A", 128, "A")
#: Methods of the demo: label, mode.
DEMO_METHODS: tuple[tuple[str, str], ...] = (
    ("dense SNN", "dense"),
    ("SNN ticket (lt)", "lt"),
    ("binarised SNN ticket (mp)", "mp"),
)


def demo_configs(
    out: str | os.PathLike[str] | None = "runs/demo",
    *,
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
    pa: float = 0.4,
    max_batches: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    threads: int | str = "auto",
    resume: bool = False,
) -> list[tuple[str, TrainConfig]]:
    """The three experiments of the demo: dense SNN, SNN ticket, binarised SNN ticket.

    The zoo's ``vgg_small`` widened to ``64C3-64C3-AP2-128C3-AP2-FC10`` on the embedded
    8x8 digits, ``T = 4``, ``beta = 0.99``, ``pa = 0.4``, Adam at 0.01 for the scores and
    for the weights (the paper's 0.1 on scores gave 1 to 3 points less here), cosine
    schedule, batch 64. A wide layer gives the search more random weights to choose
    from. Each method writes to ``out/<mode>``; ``overwrite`` lets it replace an earlier run's
    results there, ``resume`` continues an interrupted one from its checkpoint; ``threads``
    is each run's ``threads`` setting (:mod:`spikelottery.threads`).

    >>> [label for label, _ in demo_configs(None)]
    ['dense SNN', 'SNN ticket (lt)', 'binarised SNN ticket (mp)']
    """
    configs = []
    for label, mode in DEMO_METHODS:
        cfg = TrainConfig(
            model="vgg_small",
            dataset="digits",
            mode=mode,
            pa=pa,
            timesteps=4,
            beta=0.99,
            epochs=epochs,
            lr=0.01,
            weight_lr=0.01,
            batch_size=64,
            seed=seed,
            resolution=8,
            model_kwargs={"config": list(DEMO_LAYERS)},
            out=None if out is None else str(Path(out) / mode),
            max_batches=max_batches,
            energy_batches=2,
            progress=progress,
            overwrite=overwrite,
            resume=resume,
            threads=threads,
        )
        configs.append((label, cfg))
    return configs


def demo(
    out: str | os.PathLike[str] | None = "runs/demo",
    *,
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
    pa: float = 0.4,
    max_batches: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    overwrite: bool = False,
    threads: int | str = "auto",
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Compare the dense SNN, its ticket and its binarised ticket on the embedded digits.

    Writes ``out/results.json``: a list of records with the keys ``method``, ``mode``,
    ``accuracy``, ``kept_fraction``, ``energy_mj``, ``energy_sparse_mj``,
    ``ann_reference_mj`` (the same network as an ANN, the reference of "% of ANN"), ``seconds``,
    ``threads`` (the intra-op CPU threads the run used).

    Args:
        out: Output folder (``None`` writes nothing).
        epochs: Epochs per method.
        seed: Seed of every run.
        pa: Fraction of weights removed by the tickets.
        max_batches: Batches per epoch (quick tests).
        progress: tqdm progress bars.
        echo: Called with a line after each method (e.g. ``print``).
        overwrite: Replace the results of an earlier demo in ``out``; without it a demo
            refuses an ``out`` that holds results, before it trains anything.
        threads: Intra-op CPU threads of each run: a count, or ``"auto"`` (see
            :mod:`spikelottery.threads`); each run's ``results.json`` says how it chose.
        resume: Continue an interrupted demo in ``out``: each method resumes from its
            checkpoint (a finished one is only evaluated again), as ``run --resume`` does.

    Returns:
        The records, one per method.
    """
    configs = demo_configs(
        out,
        epochs=epochs,
        seed=seed,
        pa=pa,
        max_batches=max_batches,
        progress=progress,
        overwrite=overwrite,
        threads=threads,
        resume=resume,
    )
    if resume and overwrite:
        raise ConfigError(
            "overwrite",
            "resume=True continues the demo in out, overwrite=True replaces it: choose one",
        )
    if out is not None and not (overwrite or resume) and (Path(out) / RESULTS_FILE).exists():
        raise ConfigError(
            "out",
            f"out folder {str(out)!r} already holds demo results ({RESULTS_FILE}); replace "
            "them with overwrite=True (spikelottery demo --overwrite), run them again from "
            "their checkpoints with resume=True (--resume), or choose another out",
        )
    for _, cfg in configs:  # all three before the first one trains
        check_out(cfg)
    records = []
    for label, cfg in configs:
        res = Trainer(cfg).run()
        record = {
            "method": label,
            "mode": cfg.mode,
            "accuracy": res.accuracy,
            "kept_fraction": res.kept_fraction,
            "energy_mj": res.energy_mj,
            "energy_sparse_mj": res.energy_sparse_mj,
            "ann_reference_mj": res.ann_reference_mj,
            "seconds": res.seconds,
            "threads": res.threads["count"] if res.threads else None,
        }
        records.append(record)
        if echo is not None:
            echo(
                f"{label}: accuracy {100 * res.accuracy:.2f}%, kept {100 * res.kept_fraction:.1f}%, "
                f"{res.seconds:.1f} s"
            )
    if out is not None:
        write_json(Path(out) / RESULTS_FILE, records)
    return records


def _ann_reference(record: Mapping[str, Any]) -> Any:
    """The ANN reference of a demo row (older rows: ``ann_energy_mj``)."""
    return record.get("ann_reference_mj", record.get("ann_energy_mj"))


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table of demo records (accuracy, kept %, energy, ANN energy, time).

    ``% of ANN`` is the energy as a percentage of the same network run as an ANN
    (``ann_reference_mj``, paper Eq. 3-4), the figure behind the paper's energy savings.

    >>> print(format_table([{"method": "m", "accuracy": 0.5, "kept_fraction": 1.0,
    ...                      "energy_mj": 0.001, "energy_sparse_mj": 0.001,
    ...                      "ann_reference_mj": 0.004, "seconds": 2.0}]))
    method  accuracy  kept %  energy (mJ)  energy, sparse (mJ)  ANN (mJ)  % of ANN  time (s)
    ------  --------  ------  -----------  -------------------  --------  --------  --------
    m         50.00%  100.0%     0.001000             0.001000  0.004000     25.0%       2.0
    """

    def mj(v: Any) -> str:
        return "n/a" if v is None else f"{v:.6f}"

    def pct(part: Any, whole: Any) -> str:
        return "n/a" if part is None or not whole else f"{100 * part / whole:.1f}%"

    header = (
        "method",
        "accuracy",
        "kept %",
        "energy (mJ)",
        "energy, sparse (mJ)",
        "ANN (mJ)",
        "% of ANN",
        "time (s)",
    )
    rows = [
        (
            str(r["method"]),
            f"{100 * r['accuracy']:.2f}%",
            f"{100 * r['kept_fraction']:.1f}%",
            mj(r.get("energy_mj")),
            mj(r.get("energy_sparse_mj")),
            mj(_ann_reference(r)),
            pct(r.get("energy_mj"), _ann_reference(r)),
            f"{r['seconds']:.1f}",
        )
        for r in records
    ]
    return "\n".join(format_rows(header, rows, numeric=range(1, len(header))))
