"""The report's schedule check: the plain loop's CE-only and kd students at two schedule lengths.

``benchmarks/methods_plain_loop.py --out <work>/schedule.jsonl`` appends one JSON line per run
(data set, hidden width, alpha, T, seed, epochs, test accuracy); the report copies those lines into
``docs/benchmarks/methods-schedule.json`` and this module turns them into the report's section, with the
command of every group of runs written out from the lines themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from methods_stats import fmt


def load_runs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def schedule_section(runs: list[dict[str, Any]], path: str) -> list[str]:
    """Markdown lines comparing CE only with kd at each (data set, width, epochs) of ``runs``, the lines
    of the file ``path`` (named in the commands)."""
    # (data set, hidden, epochs) -> {(alpha, T): {seed: accuracy}}
    groups: dict[tuple[str, int, int], dict[tuple[float, float], dict[int, float]]] = {}
    for r in runs:
        key = (r["dataset"], r["hidden"], r.get("epochs", 15))
        setting = (r["alpha"], r["T"])
        groups.setdefault(key, {}).setdefault(setting, {})[r["seed"]] = r["test_accuracy"]
    epochs = sorted({k[2] for k in groups})
    commands, rows = [], []
    for dataset, hidden in sorted({(k[0], k[1]) for k in groups}):
        kd_settings = sorted({s for k, g in groups.items() if k[:2] == (dataset, hidden) for s in g if s[0] > 0})
        for kd in kd_settings:
            cells = []
            for e in epochs:
                group = groups.get((dataset, hidden, e), {})
                ce, dist = group.get((0.0, 1.0), {}), group.get(kd, {})
                seeds = sorted(set(ce) & set(dist))
                if not seeds:
                    cells += ["-", "-", "-"]
                    continue
                cells += [fmt([ce[s] for s in seeds]), fmt([dist[s] for s in seeds]),
                          fmt([dist[s] - ce[s] for s in seeds])]
                commands.append(f"`python benchmarks/methods_plain_loop.py --dataset {dataset} --hidden {hidden} "
                                f"--epochs {e} --seeds {' '.join(map(str, seeds))} --settings 0,1 {kd[0]:g},{kd[1]:g} "
                                f"--out {path}`")
            rows.append(f"| {dataset} | 784-{hidden}-10 | T={kd[1]:g}, alpha={kd[0]:g} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    head = " | ".join(f"CE only, {e} epochs (%) | kd, {e} epochs (%) | gain, {e} epochs (points)" for e in epochs)
    return [
        "## Does a longer schedule change the picture?",
        "",
        "The students alone still gained a little over their last epochs (set-up above), so the same MLPs were "
        "trained again by the plain PyTorch loop of `benchmarks/methods_plain_loop.py` (no kdistill training "
        "code; all 60,000 training images, no validation split, the last epoch scored on the test set; the "
        "benchmark's optimiser, batch and cosine decay, and the benchmark's teachers) at "
        + " and ".join(str(e) for e in epochs) + " epochs: cross-entropy only against kd at the student's "
        "tuned values, paired by seed. Commands: " + "; ".join(commands) + ".",
        "",
        f"| data set | student | kd setting | {head} |",
        "|---|---|---|" + "---|" * (3 * len(epochs)),
        *rows,
        "",
    ]
