"""Reproduce the MNIST experiments of Hinton, Vinyals & Dean (2015), section 3.

Runs, from ``examples/hinton-mnist.yaml``:

1. the teacher, 784-1200-1200-10 with dropout, trained on inputs jittered by
   up to 2 pixels (paper: 67 test errors);
2. the student, 784-800-800-10, trained alone on the labels (paper: 146);
3. the same student distilled from the teacher at T=20 (paper: 74);
4. "omit all 3s": the student distilled on a transfer set with no 3 in it
   (paper: 206 errors, 133 of them on the 1010 test 3s); then the bias of
   class 3 is raised (paper: by 3.5, giving 109 errors, 14 on 3s).

The bias correction adds an offset ``b`` to the class-3 logit bias of the
student's output layer, ``z_3 <- z_3 + b``. We report the paper's ``b = 3.5``
and an offset fitted on held-out labelled training images (the last 10,000 of
the training set, which the omit-3s transfer set also leaves out): the
``b`` on a grid 0..10 that makes the fewest errors there.

Every run is resumable and recorded on its own. A run's checkpoints go to
``--out/NAME`` (a killed run resumes from its ``last.safetensors`` when the
benchmark is started again); a finished run writes ``--records/NAME.json``
(test and validation errors, best epoch, wall and CPU time, torch version,
threads, CPU) and is never run again. After every finished run the table is
rebuilt from the records (``--write``), so a partial table is always there.

The omit-3s run uses the first seed; the student alone and the distilled
student run for every seed of ``--seeds``, seed by seed, all distilled from
the first seed's teacher; the other seeds' teachers train last, for the
teacher row's seed spread. ``--pilot``
runs instead the short teacher schedules of :data:`PILOTS`, used to choose the
teacher's optimiser and regularisation on validation error (never test
error); their records go beside the others as ``pilot-*.json`` and the doc
lists them. The distilled student's learning rate is chosen the same way, by
the short distillation schedules of :data:`DISTILL_PILOTS`
(``pilot-distilled-*``); a pilot that diverges is recorded as diverged, and
the omit-3s run uses the same setting. ``--quick`` shortens every schedule (a check that the pipeline
runs; its results say so and go to a separate records folder).

    nice python benchmarks/hinton_mnist.py --threads 1 --out ~/kdistill-bench/hinton \\
        --write docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from _common import ROOT, data_dir, device_name, write_section
from torch import Tensor, nn

from kdistill.compress.load import load_model
from kdistill.config import ExperimentConfig, load_config
from kdistill.data import DataSplits
from kdistill.errors import DataError, TrainingError
from kdistill.eval import predict
from kdistill.experiment import build_run, execute, load_data, seeded
from kdistill.train import resolve_device, split_validation
from kdistill.train.checkpoint import atomic_write_text

CONFIG = ROOT / "examples" / "hinton-mnist.yaml"
RECORDS = ROOT / "docs" / "benchmarks" / "hinton"
START, END = "<!-- hinton:start -->", "<!-- hinton:end -->"
PILOT_START, PILOT_END = "<!-- hinton-pilot:start -->", "<!-- hinton-pilot:end -->"
PAPER = {"teacher": 67, "student": 146, "distilled": 74, "omit3": 206, "omit3_on_3s": 133,
         "omit3_fixed": 109, "omit3_fixed_on_3s": 14}
PAPER_OFFSET = 3.5
HOLDOUT = 10_000
QUICK = {"teacher_train.epochs": 12, "train.epochs": 10}
#: short teacher schedules compared on validation error to choose the full one (same epochs each)
PILOT_EPOCHS = 20
PILOTS: dict[str, list[str]] = {
    "sgd-0.05": [],
    "sgd-0.05-maxnorm-2": ["teacher_train.max_norm=2"],
    "sgd-0.2-maxnorm-2": ["teacher_train.max_norm=2", "teacher_train.optimizer.lr=0.2"],
}
#: short distillation schedules (T=20, alpha 0.9 fixed, as in the paper) compared on validation error to
#: choose the distilled student's learning rate: the soft-target term, scaled by T^2, behaves like a squared
#: error on logits and lr 0.05 (the student-alone setting) diverged
DISTILL_PILOTS: dict[str, list[str]] = {
    "sgd-0.05": [],
    "sgd-0.05-clip-1": ["train.grad_clip=1"],
    "sgd-0.02": ["train.optimizer.lr=0.02"],
    "sgd-0.01": ["train.optimizer.lr=0.01"],
    "sgd-0.005": ["train.optimizer.lr=0.005"],
}

log = logging.getLogger("kdistill")


def output_layer(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of a model: the layer whose bias sets each class's prior."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear output layer to correct")
    return linears[-1]


def errors(logits: Tensor, y: Tensor, cls: int | None = None) -> int:
    wrong = logits.argmax(-1) != y
    if cls is not None:
        wrong = wrong & (y == cls)
    return int(wrong.sum())


def fit_class_offset(logits: Tensor, y: Tensor, cls: int, grid: Tensor) -> float:
    """The offset added to class ``cls``'s logit that makes the fewest errors on ``(logits, y)``."""
    best = min(grid.tolist(), key=lambda b: (errors(shifted(logits, cls, b), y), abs(b)))
    return float(best)


def shifted(logits: Tensor, cls: int, offset: float) -> Tensor:
    out = logits.clone()
    out[:, cls] += offset
    return out


def correct_bias(model: nn.Module, cls: int, offset: float) -> None:
    """Raise the output bias of class ``cls`` by ``offset`` in place (Hinton et al. 2015, sec. 3)."""
    with torch.no_grad():
        output_layer(model).bias[cls] += offset


def without_class(data: DataSplits, cls: int, holdout: int) -> DataSplits:
    """The transfer set with every ``cls`` removed and the last ``holdout`` images kept back."""
    x, y = data.x_train[:-holdout], data.y_train[:-holdout]
    keep = y != cls
    return dataclasses.replace(data, x_train=x[keep], y_train=y[keep])


# --------------------------------------------------------------------------- one resumable run


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": device_name(resolve_device("cpu")), "python": platform.python_version()}


class EpochClock:
    """Wall and CPU seconds of every epoch, kept in the run folder so a resumed run adds to them."""

    def __init__(self, folder: Path):
        self.path = folder / "timing.json"
        self.epochs: dict[str, list[float]] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.restart()

    def restart(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __call__(self, epoch: int, record: dict[str, float]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.epochs[str(epoch)] = [round(wall - self.wall, 2), round(cpu - self.cpu, 2)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.epochs))
        self.restart()

    def totals(self) -> tuple[float, float]:
        return (round(sum(w for w, _ in self.epochs.values()), 1),
                round(sum(c for _, c in self.epochs.values()), 1))


def run_once(name: str, cfg: ExperimentConfig, role: str, data: DataSplits, args: argparse.Namespace,
             teacher: nn.Module | None = None,
             extra: Callable[[nn.Module | None], dict[str, Any]] | None = None,
             allow_divergence: bool = False) -> dict[str, Any]:
    """Train run ``name`` (resuming its folder), evaluate its best epoch, write and return its record.

    A run with a record already is read back, never trained again. With ``allow_divergence`` (pilots) a
    run whose loss becomes NaN or explodes is recorded as diverged, with no errors counted.
    """
    record_path = args.records / f"{name}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    folder = args.out / name
    last = folder / "last.safetensors"
    kind = "distill" if teacher is not None else role
    run = build_run(cfg, kind, data=data, teacher=teacher, out_dir=folder)
    clock = EpochClock(folder)
    log.info("hinton-mnist: %s %s", "resuming" if last.exists() else "starting", name)
    train = run.train
    try:
        result = execute(run, resume=last if last.exists() else None, on_epoch_end=clock, evaluate=False)
    except TrainingError as error:
        if not allow_divergence:
            raise
        model = None
        outcome: dict[str, Any] = {"diverged": str(error), "epochs_run": len(clock.epochs), "best_epoch": None,
                                   "test_errors": None, "val_errors": None, "val_size": None}
        log.info("hinton-mnist: %s diverged: %s", name, error)
    else:
        model = result.model.eval()
        _, _, x_val, y_val = split_validation(run.data.x_train, run.data.y_train, train.val_fraction, train.seed)
        history = result.history
        outcome = {
            "epochs_run": len(history),
            "best_epoch": max(range(len(history)), key=lambda i: history[i]["val_score"]) if history else None,
            "test_errors": errors(predict(model, data.x_test), data.y_test),
            "val_errors": errors(predict(model, x_val), y_val) if len(y_val) else None,
            "val_size": len(y_val),
        }
        log.info("hinton-mnist: %s finished: %d test errors, %s validation errors", name, outcome["test_errors"],
                 outcome["val_errors"])
    wall, cpu = clock.totals()
    record = {
        "name": name, "role": kind, "seed": train.seed,
        "model": (cfg.teacher if role == "teacher" else cfg.student).model,
        "train": train.model_dump(mode="json", exclude={"progress", "device"}),
        "distill": cfg.distill.model_dump(mode="json", include={"temperature", "alpha"}) if teacher else None,
        **outcome,
        "test_size": len(data.y_test),
        "wall_seconds": wall, "cpu_seconds": cpu,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "command": "python benchmarks/hinton_mnist.py " + " ".join(args.argv),
    }
    if extra is not None:
        record.update(extra(model))
    args.records.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record


def trained_teacher(args: argparse.Namespace, name: str) -> nn.Module:
    return load_model(args.out / name / "best.safetensors")[0].eval()


def omit3_metrics(data: DataSplits) -> Callable[[nn.Module], dict[str, Any]]:
    def measure(model: nn.Module) -> dict[str, Any]:
        logits = predict(model, data.x_test)
        held_x, held_y = data.x_train[-HOLDOUT:], data.y_train[-HOLDOUT:]
        fitted = fit_class_offset(predict(model, held_x), held_y, 3, torch.arange(0, 10.01, 0.25))
        corrected = shifted(logits, 3, fitted)
        correct_bias(model, 3, fitted)  # the corrected model itself, checked against the logit shift
        assert errors(predict(model, data.x_test), data.y_test) == errors(corrected, data.y_test)
        correct_bias(model, 3, -fitted)
        return {"omit3": {
            "test_threes": int((data.y_test == 3).sum()),
            "before": [errors(logits, data.y_test), errors(logits, data.y_test, 3)],
            "paper_offset": [errors(shifted(logits, 3, PAPER_OFFSET), data.y_test),
                             errors(shifted(logits, 3, PAPER_OFFSET), data.y_test, 3)],
            "fitted_offset": fitted,
            "fitted": [errors(corrected, data.y_test), errors(corrected, data.y_test, 3)],
        }}
    return measure


# --------------------------------------------------------------------------- the study


def load(args: argparse.Namespace, extra: list[str] | None = None) -> ExperimentConfig:
    overrides = [f"{k}={v}" for k, v in QUICK.items()] if args.quick else []
    overrides += (args.set or []) + (extra or [])
    overrides.append(f"data.data_dir={args.data_dir or data_dir() / 'mnist'}")
    cfg = load_config(args.config, overrides)
    for section in (cfg.train, cfg.teacher_train):
        if section is not None:
            section.progress = False
            section.device = "cpu"
    return cfg


def run_pilots(args: argparse.Namespace, data: DataSplits) -> dict[str, Any]:
    """Run (or read back) every pilot; return the record of the one with the fewest validation errors."""
    records = []
    for label, overrides in PILOTS.items():
        cfg = load(args, overrides + [f"teacher_train.epochs={args.pilot_epochs}"])
        records.append(run_once(f"pilot-{label}", seeded(cfg, 0), "teacher", data, args,
                                extra=lambda _model, o=overrides: {"overrides": o}))
        write_docs(args)
    return min(records, key=lambda r: (r["val_errors"], r["name"]))


def run_distill_pilots(args: argparse.Namespace, data: DataSplits, teacher: nn.Module) -> dict[str, Any]:
    """Run (or read back) every distillation pilot; return the one with the fewest validation errors."""
    records = []
    for label, overrides in DISTILL_PILOTS.items():
        cfg = load(args, overrides + [f"train.epochs={args.pilot_epochs}"])
        records.append(run_once(f"pilot-distilled-{label}", seeded(cfg, 0), "student", data, args,
                                teacher=teacher, allow_divergence=True,
                                extra=lambda _model, o=overrides: {"overrides": o}))
        write_docs(args)
    finished = [r for r in records if r["val_errors"] is not None]
    if not finished:
        raise SystemExit("every distillation pilot diverged; see the pilot-distilled-* records")
    return min(finished, key=lambda r: (r["val_errors"], r["name"]))


def run_study(args: argparse.Namespace, data: DataSplits) -> None:
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = load(args)
    first = seeded(cfg, seeds[0])
    teacher_name = f"teacher-s{seeds[0]}"
    if not args.quick:  # the teacher's optimiser and max-norm: the pilot with the fewest validation errors
        winner = run_pilots(args, data)
        log.info("hinton-mnist: the teacher uses %s's settings %s", winner["name"], winner["overrides"])
        teacher_overrides = winner["overrides"]
        teacher_chosen = {"chosen_by": winner["name"], "overrides": teacher_overrides}
        teacher_cfg = seeded(load(args, teacher_overrides), seeds[0])
        run_once(teacher_name, teacher_cfg, "teacher", data, args, extra=lambda _model: dict(teacher_chosen))
    else:
        run_once(teacher_name, first, "teacher", data, args)
    write_docs(args)
    teacher = trained_teacher(args, teacher_name)
    distill_overrides: list[str] = []
    chosen: dict[str, Any] = {}
    if not args.quick:  # the distilled student's lr: the distillation pilot with the fewest validation errors
        winner = run_distill_pilots(args, data, teacher)
        distill_overrides = winner["overrides"]
        chosen = {"chosen_by": winner["name"], "overrides": distill_overrides}
        log.info("hinton-mnist: the distilled students use %s's settings %s", winner["name"], distill_overrides)
    distill_cfg = load(args, distill_overrides)
    for seed in seeds:
        run_once(f"student-s{seed}", seeded(cfg, seed), "student", data, args)
        write_docs(args)
        run_once(f"distilled-s{seed}", seeded(distill_cfg, seed), "student", data, args, teacher=teacher,
                 extra=lambda _model: dict(chosen))
        write_docs(args)
        if seed == seeds[0]:
            transfer = without_class(data, 3, HOLDOUT)
            run_once(f"omit3-s{seed}", seeded(distill_cfg, seed), "student", transfer, args, teacher=teacher,
                     extra=lambda model, measure=omit3_metrics(data): {**measure(model), **chosen})
            write_docs(args)
    # the other seeds' teachers, last: they give the teacher row its seed spread (every student above
    # distils from the first seed's teacher)
    for seed in seeds[1:] if not args.quick else []:
        run_once(f"teacher-s{seed}", seeded(load(args, teacher_overrides), seed), "teacher", data, args,
                 extra=lambda _model: dict(teacher_chosen))
        write_docs(args)


def write_docs(args: argparse.Namespace) -> None:
    records = read_records(args.records)
    section, pilots = render(records), render_pilots(records)
    print(section)
    if args.write:
        write_section(args.write, section, START, END)
        write_section(args.write, pilots, PILOT_START, PILOT_END)


def read_records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def spread(values: list[int]) -> str:
    if not values:
        return "not run yet"
    if len(values) == 1:
        return f"{values[0]} (1 seed)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (range {min(values)}-{max(values)}, {len(values)} seeds)"


def runs_of(records: dict[str, dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [r for n, r in records.items() if n.startswith(prefix + "-s")]


def schedule(r: dict[str, Any]) -> str:
    t = r["train"]
    opt = t["optimizer"]
    momentum = f" momentum {opt['momentum']:g}" if opt.get("momentum") else ""
    text = (f"{t['epochs']} epochs, batch {t['batch_size']}, {opt['name']} lr {opt['lr']:g}"
            f"{momentum}, {t['scheduler']['name']} schedule, "
            f"validation {t['val_fraction']:g} of the training set")
    if t.get("max_norm"):
        text += f", max-norm {t['max_norm']:g}"
    if t.get("grad_clip"):
        text += f", gradient norm clipped at {t['grad_clip']:g}"
    return text


def render(records: dict[str, dict[str, Any]]) -> str:
    teachers = runs_of(records, "teacher")
    students, distilled, omit = (runs_of(records, k) for k in ("student", "distilled", "omit3"))
    rows = [
        "| model (MNIST test errors, of 10,000) | paper | kdistill | validation errors | runs |",
        "|---|---:|---:|---:|---|",
        row("teacher 784-1200-1200-10, dropout, +-2 px jitter", PAPER["teacher"], teachers),
        row("student 784-800-800-10 alone", PAPER["student"], students),
        row("student distilled at T=20", PAPER["distilled"], distilled),
    ]
    if omit:
        o = omit[0]["omit3"]
        rows += [
            f"| distilled without 3s in the transfer set: all errors / errors on the {o['test_threes']} test 3s "
            f"| {PAPER['omit3']} / {PAPER['omit3_on_3s']} | {o['before'][0]} / {o['before'][1]} | | omit3 |",
            f"| ... class-3 bias +{PAPER_OFFSET} (the paper's offset) | {PAPER['omit3_fixed']} / "
            f"{PAPER['omit3_fixed_on_3s']} | {o['paper_offset'][0]} / {o['paper_offset'][1]} | | |",
            f"| ... class-3 bias +{o['fitted_offset']:g} (fitted on 10,000 held-out training images) | - | "
            f"{o['fitted'][0]} / {o['fitted'][1]} | | |",
        ]
    else:
        rows.append("| distilled without 3s in the transfer set (omit-3s and bias correction) | 206 / 133 | "
                    "not run yet | | |")
    lines = ["Records: one JSON file per finished run in `docs/benchmarks/hinton/` (the table is rebuilt from them "
             "after every run; a row says \"not run yet\" until its runs finish).", ""]
    lines += rows + ["", "| run | schedule | best epoch | wall | CPU | torch, threads, device |", "|---|---|---:|---:|---:|---|"]
    for name, r in records.items():
        if name.startswith("pilot-"):
            continue
        env = r["environment"]
        lines.append(f"| {name} | {schedule(r)} | {r['best_epoch']} | {hours(r['wall_seconds'])} | "
                     f"{hours(r['cpu_seconds'])} | {env['torch']}, {env['threads']}, {env['device']} |")
    commands = sorted({r["command"] for r in records.values() if not r["name"].startswith("pilot-")})
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in commands) if commands else "Commands: none yet."]
    return "\n".join(lines)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def row(label: str, paper: int, runs: list[dict[str, Any]]) -> str:
    test = spread([r["test_errors"] for r in runs])
    val = spread([r["val_errors"] for r in runs if r["val_errors"] is not None]) if runs else ""
    val_size = f" (of {runs[0]['val_size']:,})" if runs and runs[0]["val_errors"] is not None else ""
    return f"| {label} | {paper} | {test} | {val}{val_size} | {', '.join(r['name'] for r in runs)} |"


def render_pilots(records: dict[str, dict[str, Any]]) -> str:
    pilots = [r for n, r in records.items() if n.startswith("pilot-")]
    if not pilots:
        return "No pilot runs recorded yet."
    lines = ["| pilot (seed 0) | schedule | validation errors | best epoch | wall |",
             "|---|---|---:|---:|---:|"]

    def order(r: dict[str, Any]) -> tuple[bool, float]:  # teacher pilots first, then by validation errors
        return r["name"].startswith("pilot-distilled-"), r["val_errors"] if r["val_errors"] is not None else math.inf

    for r in sorted(pilots, key=order):
        result = (f"diverged after {r['epochs_run']} epochs" if r["val_errors"] is None
                  else f"{r['val_errors']} of {r['val_size']:,}")
        best = "-" if r["best_epoch"] is None else r["best_epoch"]
        lines.append(f"| {r['name']} | {schedule(r)} | {result} | {best} | {hours(r['wall_seconds'])} |")
    env = pilots[0]["environment"]
    lines += ["", f"Device: {env['device']}; torch {env['torch']}. Command: `{pilots[0]['command']}`. "
              "The winner is the fewest validation errors; test errors of the pilots are recorded in their "
              "files but were not looked at to choose."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--quick", action="store_true", help=f"reduced schedule: {QUICK}")
    parser.add_argument("--pilot", action="store_true",
                        help=f"run only the {PILOT_EPOCHS}-epoch teacher pilots that choose the teacher's "
                        "settings on validation (the full study runs them first too)")
    parser.add_argument("--pilot-epochs", type=int, default=PILOT_EPOCHS, help="the pilots' schedule")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--data-dir", help="folder holding the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/hinton-mnist"), help="checkpoints, per run")
    parser.add_argument("--records", type=Path, help=f"one JSON file per finished run (default {RECORDS})")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--write", type=Path, help="put the tables into this Markdown file")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.out = args.out.expanduser()
    if args.records is None:
        custom = args.quick or args.set or args.pilot_epochs != PILOT_EPOCHS
        args.records = RECORDS if not custom else args.out / "records"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = load_data(load(args))
    except DataError as error:
        sys.exit(f"MNIST is not available ({error}); skipping the reproduction.")
    if args.pilot:
        run_pilots(args, data)
    else:
        run_study(args, data)
    log.info("hinton-mnist: all runs recorded in %s (load average %.2f)", args.records, os.getloadavg()[0])


if __name__ == "__main__":
    main()
