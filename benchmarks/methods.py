"""The distillation methods benchmark: every method and scheme on MNIST and Fashion-MNIST.

    KDISTILL_DATA=/path/to/data python benchmarks/methods.py --work runs/bench-methods

What it measures, per data set (full 60,000 / 10,000 images; 10% of train held
out for picking the best epoch and for tuning, the test set never used for a
choice):

* the teacher: the model ``benchmarks/methods/teacher-<ds>.yaml`` names (``cnn-medium``
  on MNIST, ``cnn-deep`` on Fashion-MNIST), trained by that file
  into ``<work>/<ds>/teacher`` (reused when finished, resumed when not, waited
  for while another process trains it);
* students ``mlp-simple`` (hidden [32], 25k parameters) and ``mlp-simple``
  with hidden [128] (102k), trained without augmentation so the teacher's
  outputs come from the teacher cache; ``at`` / ``nst`` need conv maps and run
  on a third student, ``cnn-simple`` with widths [16, 32, 64] (24k);
* two columns of settings: values chosen by ``kdistill tune`` on the
  validation split (``--tune``), and the papers' defaults;
* 3 seeds per (row, column, student); best-epoch and last-epoch test
  accuracy, agreement and predictive KL with the teacher.

Every finished (row, column, student, seed) is kept as ``result.json`` in its
run folder under ``<work>/<ds>/runs`` and never rerun; running the script again
only writes the report (docs/METHODS_BENCHMARK.md, docs/benchmarks/methods.*).
``--quick`` checks the whole pipeline in a few minutes (small subset, 1 epoch,
1 seed) and writes its report into the work folder, not docs/.

Teacher outputs are memoised across the runs of one process
(:mod:`benchmarks.methods_memo`): the same teacher weights on the same inputs
give the same outputs, so the first run that needs them pays for the forward
pass and later runs reuse it. No number changes; only the cost does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import methods_memo  # noqa: E402
import methods_report  # noqa: E402
from methods_rows import (  # noqa: E402
    SCHEDULE,
    SEARCH,
    STUDENTS,
    Row,
    alone_row,
    cnn_rows,
    dml_row,
    paper_rows,
    short_values,
    tune_base,
    tuned_rows,
)

from kdistill.config import parse_config, read_yaml  # noqa: E402
from kdistill.eval import evaluate_model, predict  # noqa: E402
from kdistill.experiment import get_teacher, load_data, load_model, train_model  # noqa: E402
from kdistill.experiment.teachers import teacher_state  # noqa: E402
from kdistill.schemes import run_experiment  # noqa: E402
from kdistill.train.checkpoint import atomic_write_text, read_checkpoint_metadata  # noqa: E402
from kdistill.train.lock import folder_lock  # noqa: E402
from kdistill.tune import run_tune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench")
OTHER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Schedule:
    epochs: int = SCHEDULE["epochs"]
    batch_size: int = SCHEDULE["batch_size"]
    lr: float = SCHEDULE["lr"]
    weight_decay: float = SCHEDULE["weight_decay"]
    cnn_epochs: int = SCHEDULE["cnn_epochs"]
    teacher2_epochs: int = 10
    limit_train: int | None = None
    limit_test: int | None = None


class DataSet:
    """One data set's teacher, second teacher, test logits and folders."""

    def __init__(self, name: str, work: Path, sched: Schedule, quick: bool) -> None:
        self.name, self.work, self.sched, self.quick = name, work / name, sched, quick
        raw = read_yaml(HERE / "methods" / f"teacher-{name}.yaml")
        if quick:  # a throw-away teacher on the subset, in the quick work folder
            raw["data"] = {**raw["data"], "limit_train": sched.limit_train, "limit_test": sched.limit_test}
            raw["teacher_train"] = {**raw["teacher_train"], "epochs": 1}
        raw["teacher_train"]["progress"] = False
        self.teacher_raw = raw
        self.teacher_cfg = parse_config(raw, source=f"teacher-{name}.yaml")
        self.data = load_data(self.teacher_cfg)
        self.teacher_dir = self.work / "teacher"
        self.teacher_ckpt = self.teacher_dir / "best.safetensors"
        self.teacher_model: str = raw["teacher"]["model"]
        self.teacher2_ckpt: Path | None = None
        self.teacher_logits: torch.Tensor | None = None  # test logits, once the teacher is there
        self.info_path = self.work / "bench-teachers.json"
        self.info = json.loads(self.info_path.read_text()) if self.info_path.exists() else {}

    def prepare_teacher(self, poll: float | None = None) -> None:
        """The main teacher, its test logits, and the teachers' record for the report.

        With ``poll`` (seconds) the teacher is never trained here: the call waits until another
        process has finished it, checking every ``poll`` seconds.
        """
        while poll and teacher_state(self.teacher_cfg, self.data, self.teacher_dir) != "finished":
            time.sleep(poll)
        self.teacher = self._main_teacher()
        self.teacher_logits = predict(self.teacher, self.data.x_test)
        self.teacher_metrics = evaluate_model(self.teacher, self.data, latency=False)
        meta = read_checkpoint_metadata(self.teacher_dir / "last.safetensors")
        self.info["teacher"] = {"model": self.teacher_model, "accuracy": self.teacher_metrics["accuracy"],
                                "params": self.teacher_metrics["params"],
                                "epochs": self.teacher_cfg.teacher_train.epochs,
                                "val_history": [h.get("val_score") for h in meta.get("history", [])],
                                "train_wall_s": sum(h.get("seconds", 0.0) for h in meta.get("history", []))}
        early = self.teacher_dir / f"epoch-{self.early_epoch:03d}.safetensors"
        if early.exists():
            model, _ = load_model(early)
            self.info["early"] = {"epoch": self.early_epoch,
                                  "accuracy": evaluate_model(model, self.data, latency=False)["accuracy"]}
        self.write_info()

    @property
    def early_epoch(self) -> int:
        return 0 if self.quick else 3

    def write_info(self) -> None:
        atomic_write_text(self.info_path, json.dumps(self.info, indent=2, default=float))

    def data_section(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.teacher_raw["data"]))

    def _main_teacher(self) -> torch.nn.Module:
        """Reuse the finished teacher; wait for a process training it; resume or train it otherwise."""
        state = teacher_state(self.teacher_cfg, self.data, self.teacher_dir)
        if state == "different":
            raise SystemExit(f"{self.teacher_dir} holds a teacher trained with other settings than "
                             f"benchmarks/methods/teacher-{self.name}.yaml; refusing to overwrite it. Point "
                             "--work elsewhere or remove that folder.")
        if state != "finished":
            print(f"[{self.name}] teacher is {state}: waiting for any process training it, then "
                  "training or resuming it", flush=True)
        # a process already training the folder holds its lock: wait for it instead of training twice
        with folder_lock(self.teacher_dir, "waiting for the benchmark's teacher", wait=True):
            return get_teacher(self.teacher_cfg, self.data, self.work)

    def second_teacher(self) -> Path:
        """The cheap second member of the multi-teacher ensemble: Hinton's 1200-1200 MLP with dropout."""
        if self.teacher2_ckpt is None:
            augment = self.teacher_raw.get("teacher_augment") or {}
            raw = {"name": f"bench-methods-{self.name}-second", "data": self.data_section(),
                   "teacher": {"model": "hinton-teacher"}, "student": {"model": "mlp-simple"},
                   "teacher_augment": augment,
                   "teacher_train": {"epochs": 1 if self.quick else self.sched.teacher2_epochs,
                                     "batch_size": 128, "seed": 0, "progress": False,
                                     "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
                                     "scheduler": {"name": "cosine"}}}
            cfg = parse_config(raw, source="second teacher")
            t0, c0 = time.perf_counter(), cpu_seconds()
            model = get_teacher(cfg, self.data, self.work / "second")
            self.teacher2_ckpt = self.work / "second" / "teacher" / "best.safetensors"
            if "second" not in self.info:
                self.info["second"] = {"model": "hinton-teacher", "epochs": cfg.teacher_train.epochs,
                                       "accuracy": evaluate_model(model, self.data, latency=False)["accuracy"],
                                       "cpu_s": cpu_seconds() - c0, "wall_s": time.perf_counter() - t0}
                self.write_info()
        return self.teacher2_ckpt


def base_raw(ds: DataSet, student: str, seed: int, name: str) -> dict[str, Any]:
    s = ds.sched
    epochs = 1 if ds.quick else (s.cnn_epochs if student == "cnn" else s.epochs)
    return {
        "name": name,
        "data": ds.data_section(),
        "teacher": {"model": ds.teacher_model, "checkpoint": str(ds.teacher_ckpt)},
        "student": json.loads(json.dumps(STUDENTS[student])),
        "train": {"epochs": epochs, "batch_size": s.batch_size, "seed": seed, "progress": False,
                  "device": "cpu",
                  "optimizer": {"name": "adamw", "lr": s.lr, "weight_decay": s.weight_decay},
                  "scheduler": {"name": "cosine"}},
    }


def reuse_work(source: Path, work: Path, name: str) -> None:
    """Let ``work`` share ``source``'s teachers (links) and tuned values (copies of the finished searches'
    records) for data set ``name``, so another schedule (``--epochs``) is compared at the same settings."""
    src, dst = source / name, work / name
    if not (src / "teacher").is_dir():
        raise SystemExit(f"--reuse {source}: {src / 'teacher'} holds no teacher; run the benchmark there first.")
    dst.mkdir(parents=True, exist_ok=True)
    for folder in ("teacher", "second"):
        if (src / folder).is_dir() and not (dst / folder).exists():
            (dst / folder).symlink_to((src / folder).resolve(), target_is_directory=True)
    for record in src.glob("tune/*/*/bench.json"):
        target = dst / record.relative_to(src)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(record, target)
    info, target = src / "bench-teachers.json", dst / "bench-teachers.json"
    if info.exists() and not target.exists():
        teachers = json.loads(info.read_text())
        teachers.get("second", {}).update(cpu_s=0.0, wall_s=0.0)  # trained there, not paid again here
        atomic_write_text(target, json.dumps(teachers, indent=2))


def record_command(path: Path, command: str) -> None:
    """Append ``command`` to the data set's command history (the report lists them in order)."""
    history = methods_report.command_history(path)
    if not history or history[-1] != command:
        history.append(command)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"commands": history}, indent=1))


# --------------------------------------------------------------------------- tuning


def tuned_values(ds: DataSet, student: str, trials: dict[str, int], run: bool,
                 methods: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Per method (all of ``SEARCH``, or ``methods``), the values ``kdistill tune`` chose on the
    validation split (searched now or read back).

    ``<tune folder>/bench.json`` records the finished trial count, the search
    space and the CPU and wall time spent (summed over interrupted calls).
    """
    values: dict[str, dict[str, float]] = {}
    for method in methods or SEARCH:
        out = ds.work / "tune" / student / method
        cost_path = out / "bench.json"
        n = 2 if ds.quick else trials.get(method, trials["default"])
        cost = json.loads(cost_path.read_text()) if cost_path.exists() else {}
        if cost.get("finished", 0) < n:
            if not run:
                continue
            raw = tune_base(method, base_raw(ds, student, 0, f"tune-{ds.name}-{student}-{method}"))
            cfg = parse_config(raw, source=f"tune {method}")
            t0, c0 = time.perf_counter(), cpu_seconds()
            try:
                result = run_tune(cfg, n, out_dir=out, data=ds.data, study_name=f"{student}-{method}")
            finally:
                cost.update(wall_s=cost.get("wall_s", 0.0) + time.perf_counter() - t0,
                            cpu_s=cost.get("cpu_s", 0.0) + cpu_seconds() - c0, search=raw["tune"]["search"],
                            pruner=raw["tune"]["pruner"])
                atomic_write_text(cost_path, json.dumps(cost, indent=2))
            cost.update(finished=result.finished_trials, best_params=result.best_params,
                        best_value=result.best_value)
            atomic_write_text(cost_path, json.dumps(cost, indent=2))
            print(f"[{ds.name}] tuned {student}/{method}: {result.best_params} "
                  f"(val {result.best_value:.4f}, {cost['cpu_s']:.0f} s CPU)", flush=True)
        values[method] = short_values(cost["best_params"])
    return values


# --------------------------------------------------------------------------- one run


def run_one(ds: DataSet, student: str, column: str, row: Row, seed: int) -> tuple[dict[str, Any], bool]:
    """The record of one (row, column, student, seed): read back if it finished before, else run now."""
    folder = ds.work / "runs" / student / column / row.slug / f"seed{seed}"
    record_path = folder / "result.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("settings") == row.settings:
            return record, False
        # the row's settings changed (tuned again, say): the old run answers another question
        stale = ds.work / "superseded" / student / column / row.slug / f"seed{seed}-{int(time.time())}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(stale)
        print(f"[{ds.name}] {row.label} seed {seed}: settings changed from {record.get('settings')!r} to "
              f"{row.settings!r}; the old run moved to {stale}", flush=True)
    raw = base_raw(ds, student, seed, f"bench-{ds.name}-{student}-{column}-{row.slug}-{seed}")
    for key, value in row.overrides(ds, student, seed).items():
        raw[key] = value
    cfg = parse_config(raw, source=f"row {row.label}")
    t0, c0 = time.perf_counter(), cpu_seconds()
    if row.kind == "alone":
        result = train_model(cfg, "student", data=ds.data, out_dir=folder / "student")
    else:
        # a row killed part-way left no result.json: it runs again from the start, as before runs were kept
        result = run_experiment(cfg, data=ds.data, out_dir=folder, overwrite=True)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    best = evaluate_model(result.model, ds.data, teacher_logits=ds.teacher_logits, latency=False)
    last_path = Path(result.checkpoint).parent / "last.safetensors"
    last_model, last_meta = load_model(last_path)
    last = evaluate_model(last_model, ds.data, teacher_logits=ds.teacher_logits, latency=False)
    history = [h.get("val_score") for h in result.history]
    record = {
        "dataset": ds.name, "student": student, "column": column, "row": row.slug, "label": row.label,
        "settings": row.settings, "seed": seed, "params": best["params"],
        "accuracy": best["accuracy"], "agreement": best.get("agreement"), "kl": best.get("kl"),
        "last_accuracy": last["accuracy"], "last_agreement": last.get("agreement"), "last_kl": last.get("kl"),
        "best_path": str(result.checkpoint), "last_path": str(last_path),
        "best_epoch": int(last_meta.get("best_epoch", -1)), "epochs": cfg.train.epochs,
        "val_history": history, "wall_s": wall, "cpu_s": cpu, "config": raw,
    }
    atomic_write_text(record_path, json.dumps(record, indent=2, default=float))
    fidelity = (f"agree {record['agreement']:.4f} kl {record['kl']:.4f}" if record["agreement"] is not None
                else "agreement pending")
    print(f"[{ds.name}] {student:5s} {column:6s} {row.label:42s} seed {seed}: best {best['accuracy']:.4f} "
          f"last {last['accuracy']:.4f} {fidelity} ({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
    return record, True


def fill_fidelity(ds: DataSet) -> None:
    """Agreement and KL with the teacher for runs that finished before the teacher did (no teacher rows)."""
    for path in sorted(ds.work.glob("runs/*/*/*/seed*/result.json")):
        record = json.loads(path.read_text())
        if record.get("agreement") is not None:
            continue
        for prefix, key in (("", "best_path"), ("last_", "last_path")):
            model, _ = load_model(record[key])
            m = evaluate_model(model, ds.data, teacher_logits=ds.teacher_logits, latency=False)
            record[f"{prefix}agreement"], record[f"{prefix}kl"] = m["agreement"], m["kl"]
        atomic_write_text(path, json.dumps(record, indent=2, default=float))


def run_table(ds: DataSet, student: str, column: str, rows: list[Row], seeds: list[int], report,
              only: list[str] | None) -> None:
    for row in rows:
        if only and row.slug not in only:
            continue
        fresh = False
        for seed in seeds:
            if row.needs_alone:  # noisy student: its teacher is this seed's student alone
                fresh |= run_one(ds, student, "shared", rows[0], seed)[1]
            fresh |= run_one(ds, student, row.column or column, row, seed)[1]
        if fresh:  # a partial report after every row that ran something
            report()


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench-methods", help="work folder (teachers, runs, tuning)")
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "mnist"], choices=list(OTHER))
    parser.add_argument("--students", nargs="+", default=["small", "large", "cnn"], choices=list(STUDENTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--paper-seeds", type=int, nargs="+", default=None,
                        help="seeds of the papers'-defaults column (default: --seeds)")
    parser.add_argument("--paper-students", nargs="+", default=["small"], choices=list(STUDENTS))
    parser.add_argument("--trials", type=int, default=8, help="tuning trials per method")
    parser.add_argument("--kd-trials", type=int, default=12, help="tuning trials for kd")
    parser.add_argument("--slow-trials", type=int, default=5,
                        help="tuning trials for rkd and crd (several times the cost of a kd run)")
    parser.add_argument("--tune", nargs="*", default=["small"], choices=list(STUDENTS),
                        help="students tuned on their own; the others reuse the small student's values")
    parser.add_argument("--tune-methods", nargs="*", default=None, choices=list(SEARCH),
                        help="the methods a --tune student other than small tunes on its own (default: "
                             "all); the rest reuse the small student's values")
    parser.add_argument("--epochs", type=int, default=SCHEDULE["epochs"],
                        help="epochs of the MLP students (the tables: %(default)s); use another work folder "
                             "for another length, or the finished runs are superseded")
    parser.add_argument("--reuse", help="another work folder whose teachers and tuned values this one "
                                            "shares (for a run at another --epochs)")
    parser.add_argument("--only", nargs="*", help="run only these row slugs")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--quick", action="store_true", help="tiny end-to-end check (subset, 1 epoch, 1 seed)")
    parser.add_argument("--report-only", action="store_true", help="write the report from finished runs")
    parser.add_argument("--wait-for-teacher", action="store_true",
                        help="never train the main teacher here: wait until another process finished it")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where the report goes")
    parser.add_argument("--longer", default="runs/bench-methods-40ep",
                        help="a work folder of runs with a longer MLP schedule (--epochs), reported beside "
                             "these when it exists")
    parser.add_argument("--earlier", default="runs/bench-methods-teacher-cnn-medium",
                        help="a work folder of earlier runs with a weaker teacher, compared in the report "
                             "when it exists")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    if not os.environ.get("KDISTILL_DATA"):
        print("set KDISTILL_DATA to the folder holding mnist/ and fashion-mnist/", file=sys.stderr)
        return 2
    if args.epochs < 1:
        print(f"--epochs takes a positive count of epochs, got {args.epochs}", file=sys.stderr)
        return 2
    sched = Schedule(epochs=args.epochs)
    work = Path(args.work)
    seeds, paper_seeds = args.seeds, args.paper_seeds or args.seeds
    if args.quick:
        sched = Schedule(limit_train=2000, limit_test=500)
        seeds = paper_seeds = seeds[:1]
    docs = work / "report" if args.quick else Path(args.docs)
    command = "python benchmarks/methods.py " + " ".join(a for a in sys.argv[1:] if a != "--report-only")

    def report() -> None:
        methods_report.write(work, args.datasets if args.quick else list(OTHER), docs, command, quick=args.quick,
                             earlier=None if args.quick else Path(args.earlier),
                             longer=None if args.quick or Path(args.longer) == work else Path(args.longer))

    if args.report_only:
        report()
        return 0
    methods_memo.install()
    trials = {"default": args.trials, "kd": args.kd_trials, "rkd": args.slow_trials, "crd": args.slow_trials}
    for name in args.datasets:
        if args.reuse:
            reuse_work(Path(args.reuse), work, name)
        ds = DataSet(name, work, sched, args.quick)
        record_command(ds.work / "bench-command.json", command)
        ds.second_teacher()  # needs no cnn-medium teacher: trained while that one may still be training
        if args.wait_for_teacher and teacher_state(ds.teacher_cfg, ds.data, ds.teacher_dir) != "finished":
            for student in args.students:  # the rows that need no teacher, while it trains elsewhere
                free = [alone_row()] if student == "cnn" else [alone_row(), dml_row()]
                run_table(ds, student, "shared", free, seeds, report, args.only)
        ds.prepare_teacher(poll=120.0 if args.wait_for_teacher else None)
        fill_fidelity(ds)
        print(f"[{name}] teacher test accuracy {ds.teacher_metrics['accuracy']:.4f}", flush=True)
        small_values = tuned_values(ds, "small", trials, run="small" in args.tune)
        for student in args.students:
            if student == "cnn":
                run_table(ds, student, "cnn", cnn_rows(small_values), seeds, report, args.only)
                continue
            values = dict(small_values)
            if student in args.tune:
                values.update(tuned_values(ds, student, trials, run=True, methods=args.tune_methods))
            epochs = ds.teacher_cfg.teacher_train.epochs
            run_table(ds, student, "tuned", tuned_rows(values, OTHER[name], epochs, ds.teacher_model), seeds,
                      report, args.only)
            if student in args.paper_students:
                run_table(ds, student, "paper", paper_rows(OTHER[name], epochs, ds.teacher_model), paper_seeds,
                          report, args.only)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
