"""The digits table of docs/methods.md: every search method through the same engine.

Run from the repository root (about 4 minutes on 2 idle CPU cores, one thread):

    OMP_NUM_THREADS=1 python docs/_scripts/methods_table.py             # every row
    OMP_NUM_THREADS=1 python docs/_scripts/methods_table.py slt random-frozen   # some rows

Each method is one :class:`~spikelottery.engine.TrainConfig` (the CLI equivalent is
``spikelottery run --method NAME --model vgg_tiny --epochs 10 ...``); three seeds each.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from spikelottery.engine import TrainConfig, run

COMMON: dict[str, Any] = {
    "model": "vgg_tiny",
    "dataset": "digits",
    "timesteps": 4,
    "epochs": 10,
    "batch_size": 64,
    "pa": 0.5,
    "out": None,
    "progress": False,
    "device": "cpu",
    "compile_lif": "off",
}
#: 1 - 0.5 ** (1 / 3): three rounds keep about half of each layer, as pa = 0.5 does.
IMP = {"imp_rounds": 3, "imp_fraction": 0.2063}

METHODS: dict[str, dict[str, Any]] = {
    "snn": {},
    "slt": {},
    "mpslt": {},
    "global-slt": {"anneal_epochs": 3},
    "global-mpslt": {"anneal_epochs": 3},
    "et-slt": {"search_timesteps": 1},
    "imp-snn": IMP,
    "et-imp-snn": {**IMP, "search_timesteps": 1},
    "random-trained": {},
    "random-frozen": {},
}
SEEDS = (0, 1, 2)


def _row(name: str, extra: dict[str, Any]) -> str:
    results = []
    for seed in SEEDS:
        settings = {**COMMON, **extra, "seed": seed}
        if name == "snn":
            settings.pop("pa")
        results.append(run(TrainConfig.for_method(name, **settings)))
    acc = [100 * r.accuracy for r in results]
    epochs = len(results[0].history)
    per_epoch = statistics.median(h["seconds"] for r in results for h in r.history)
    early = results[0].early_time
    et = "-"
    if early is not None:
        search = statistics.mean(100 * r.early_time["search_accuracy"] for r in results)  # type: ignore[index]
        saved = statistics.mean(r.early_time["seconds_saved"] for r in results)  # type: ignore[index]
        et = f"{search:.1f}% at T=1; {saved:.1f} s saved"
    return (
        f"| `{name}` | {100 * results[0].kept_fraction:.1f}% | "
        f"{statistics.mean(acc):.1f} ± {statistics.stdev(acc):.1f} | {epochs} | "
        f"{per_epoch:.2f} | {et} |"
    )


def main() -> None:
    print(
        "| method | kept | accuracy % (3 seeds) | epochs | median s / epoch | Early-Time search |"
    )
    print("|---|---|---|---|---|---|")
    chosen = sys.argv[1:] or list(METHODS)
    unknown = [name for name in chosen if name not in METHODS]
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}; the rows are {list(METHODS)}")
    for name in chosen:
        print(_row(name, METHODS[name]), flush=True)


if __name__ == "__main__":
    main()
