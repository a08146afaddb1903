"""Detection distillation on canvas-MNIST: teacher, student alone, prediction mimicking, feature imitation, CrossKD.

    nice -n 10 .venv/bin/python benchmarks/detection.py --data-dir ../shared/data

One teacher (``fcos-medium``, trained once with seed 0 and shared by every
row) and one student architecture (``fcos-simple``); every student row runs
with 3 seeds (the seed sets the student's initial weights and batch order;
the data set is fixed). Each finished (row, seed) is stored under ``--work``
and never rerun, so an interrupted benchmark continues where it stopped;
docs/benchmarks/detection.json and the table in docs/DETECTION.md are
rewritten after every finished run. ``--only LABEL ...`` runs a subset of
rows (e.g. the extra CrossKD variants), ``--report-only`` rewrites the
report from finished runs, and ``--quick`` checks the whole pipeline in a few
minutes on a CPU (400 canvases, 3 epochs, one seed; its report stays in the
work folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import ROOT, data_dir, device_name, write_section

from kdistill.config import parse_config
from kdistill.detection.evaluate import evaluate_detector
from kdistill.experiment import load_data, load_model, run_distill, train_model
from kdistill.train.checkpoint import atomic_write_text

START, END = "<!-- detection-table:start -->", "<!-- detection-table:end -->"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def rows() -> list[tuple[str, dict[str, Any] | None]]:
    """(label, distill section) for every student row; ``None`` is the student alone."""
    def method(name: str, weight: float = 1.0, **options: Any) -> dict[str, Any]:
        return {"methods": [{"name": name, "weight": weight, "options": options}]}

    return [
        ("student alone", None),
        ("pred-mimic", method("pred-mimic", cls_weight=0.4, box_weight=0.75)),
        ("feat-imitation", method("feat-imitation", 1.0)),
        ("crosskd", method("crosskd", cross_at=2, cls_weight=0.4, box_weight=0.75)),
        # the settings tried on seed 0 before choosing the ones above (the paper's ablations: crossing
        # position and loss weights), run with --only ... --seeds 0
        ("crosskd (cross_at 1)", method("crosskd", cross_at=1, cls_weight=0.4, box_weight=0.75)),
        ("crosskd (cross_at 0)", method("crosskd", cross_at=0, cls_weight=0.4, box_weight=0.75)),
        ("crosskd (cls 1, box 1)", method("crosskd", cross_at=2, cls_weight=1.0, box_weight=1.0)),
        ("pred-mimic (cls 1, box 1)", method("pred-mimic", cls_weight=1.0, box_weight=1.0)),
    ]


MAIN_ROWS = ("student alone", "pred-mimic", "feat-imitation", "crosskd")


def schedule(args: argparse.Namespace, seed: int, epochs: int) -> dict[str, Any]:
    return {"epochs": epochs, "batch_size": args.batch_size, "seed": seed, "progress": False, "device": args.device,
            "grad_clip": 10.0, "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 0.0001},
            "scheduler": {"name": "cosine", "warmup_epochs": 0.5}}


def base_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "data": {"dataset": args.dataset, "data_dir": args.data_dir, "download": False,
                 "options": {"canvas_size": 64, "objects": [1, 4], "scale": [10, 40], "num_train": args.train,
                             "num_test": args.test, "seed": 0}},
        "teacher": {"model": args.teacher},
        "student": {"model": args.student},
        "train": schedule(args, seed, args.epochs),
    }


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label).strip("-")


def _curve(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{"epoch": int(e["epoch"]), "loss": e["loss"], "val_AP": e["val_score"]} for e in history]


def train_teacher(args: argparse.Namespace, work: Path, data) -> tuple[Path, dict[str, Any]]:
    record_path = work / "rows" / "teacher.json"
    ckpt = work / "teacher" / "best.safetensors"
    if record_path.exists() and ckpt.exists():
        return ckpt, json.loads(record_path.read_text())
    cfg = parse_config({**base_config(args, 0), "train": schedule(args, 0, args.teacher_epochs)})
    t0, c0 = time.perf_counter(), time.process_time()
    result = train_model(cfg, "teacher", data=data, out_dir=ckpt.parent)
    record = {"label": "teacher", "seed": 0, **result.metrics, "seconds": time.perf_counter() - t0,
              "cpu_seconds": time.process_time() - c0, "curve": _curve(result.history)}
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return ckpt, record


def run_row(args: argparse.Namespace, work: Path, data, teacher_ckpt: Path, teacher, label: str,
            distill: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    out = work / "rows" / f"{_slug(label)}-seed{seed}"
    raw = base_config(args, seed)
    raw["teacher"]["checkpoint"] = str(teacher_ckpt)
    if distill is not None:
        raw["distill"] = distill
    cfg = parse_config(raw)
    t0, c0 = time.perf_counter(), time.process_time()
    if distill is None:
        result = train_model(cfg, "student", data=data, out_dir=out)
    else:
        result = run_distill(cfg, data=data, teacher=teacher, out_dir=out)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    metrics = evaluate_detector(result.model, data, teacher=teacher, latency=False)
    return {"label": label, "seed": seed, **metrics, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "curve": _curve(result.history), "distill": distill}


def _ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def verdict(results: list[dict[str, Any]]) -> str:
    """Whether CrossKD beats the student alone and prediction mimicking by more than the seed spread."""
    by = {label: [r["AP"] for r in results if r["label"] == label] for label in MAIN_ROWS}
    if any(len(by[k]) < 2 for k in ("student alone", "pred-mimic", "crosskd")):
        return "Verdict: not enough finished seeds yet to compare CrossKD with the baselines."
    lines = []
    c_mean, c_std = statistics.mean(by["crosskd"]), statistics.stdev(by["crosskd"])
    for other in ("student alone", "pred-mimic", "feat-imitation"):
        if len(by[other]) < 2:
            continue
        o_mean, o_std = statistics.mean(by[other]), statistics.stdev(by[other])
        gain, spread = 100 * (c_mean - o_mean), 100 * max(c_std, o_std)
        met = "more" if gain > spread else "not more"
        lines.append(f"CrossKD − {other}: {gain:+.1f} AP points, {met} than the larger seed spread "
                     f"({spread:.1f}).")
    return "Measured: " + " ".join(lines)


def curve_table(results: list[dict[str, Any]], teacher: dict[str, Any]) -> list[str]:
    """Validation AP by epoch (mean over seeds) for the main rows: does the schedule let them converge?"""
    curves = {"teacher": [teacher["curve"]]}
    for label in MAIN_ROWS:
        found = [r["curve"] for r in results if r["label"] == label]
        if found:
            curves[label] = found
    if len(curves) < 2:
        return []
    n = min(len(c) for cs in curves.values() for c in cs)
    epochs = sorted({0, 2, 4, 7, 9, 12, 14, 16, 18, n - 1} & set(range(n)))
    lines = ["Validation AP (x100, the epoch-selection score) after epochs " + ", ".join(str(e + 1) for e in epochs)
             + ", mean over seeds:", "",
             "| row | " + " | ".join(f"ep {e + 1}" for e in epochs) + " |",
             "|---|" + "---|" * len(epochs)]
    for label, cs in curves.items():
        values = [statistics.mean(c[e]["val_AP"] for c in cs) for e in epochs]
        lines.append(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |")
    return lines


def _run_latencies(work: Path, results: list[dict[str, Any]]) -> list[float]:
    """The CPU latency each student run measured on its own (its metrics.json; distilled runs: student/)."""
    values = []
    for r in results:
        folder = work / "rows" / f"{_slug(r['label'])}-seed{r['seed']}"
        for path in (folder / "metrics.json", folder / "student" / "metrics.json"):
            if path.exists():
                values.append(json.loads(path.read_text())["latency_ms"])
                break
    return values


def cost_table(args: argparse.Namespace, results: list[dict[str, Any]], teacher: dict[str, Any]) -> list[str]:
    if not results:
        return []
    latencies = _run_latencies(Path(args.work), results)
    student_ms = f"{statistics.median(latencies):.2f}" if latencies else "-"
    return [
        "| model | parameters | size on disk | CPU latency (ms / canvas, median) |",
        "|---|---|---|---|",
        f"| teacher `{args.teacher}` | {teacher['params']:,} | {teacher['size_bytes'] / 1024:.0f} KiB | "
        f"{teacher['latency_ms']:.2f} |",
        f"| student `{args.student}` | {results[0]['params']:,} | {results[0]['size_bytes'] / 1024:.0f} KiB | "
        f"{student_ms} (median of {len(latencies)} runs) |",
        "",
        "Latency: one forward pass on one 64x64 canvas, 1 thread, network only (NMS excluded), measured after "
        "each run on the shared machine, so only the ratio is meaningful.",
    ]


def write_report(args: argparse.Namespace, results: list[dict[str, Any]], teacher: dict[str, Any]) -> None:
    labels = [label for label, _ in rows() if any(r["label"] == label for r in results)]
    command = "python benchmarks/detection.py " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    total = teacher.get("seconds", 0.0) + sum(r["seconds"] for r in results)
    cpu = teacher.get("cpu_seconds", 0.0) + sum(r.get("cpu_seconds", 0.0) for r in results)
    lines = [
        f"Command: `{command.strip()}`; the runs in this table took {cpu / 60:.0f} min of CPU time "
        f"({total / 60:.0f} min wall).",
        "",
        f"Device: 2-core CPU, no GPU ({device_name(torch.device('cpu'))}), torch {torch.__version__}, "
        f"{args.threads} torch thread(s) per run; other jobs shared the machine, so wall times are inflated and "
        "CPU times are the better measure of cost.",
        "",
        f"Data: `{args.dataset}`, 64x64 canvases with 1-4 glyphs of 10-40 px, {args.train} training canvases "
        f"(10% held out to pick the best epoch by validation AP) and {args.test} test canvases. Teacher "
        f"`{args.teacher}` ({teacher['params']:,} parameters) trained once, seed 0, {args.teacher_epochs} epochs; "
        f"students `{args.student}`, {args.epochs} epochs; batch {args.batch_size}, AdamW lr {args.lr}, "
        "weight decay 1e-4, cosine decay after half an epoch of warm-up, gradient clipping at 10. Values are "
        "AP points (x100), mean ± standard deviation over the finished seeds; fidelity AP50 is the student's "
        "AP50 against the teacher's detections with score >= 0.5.",
        "",
        "| model / method | seeds | AP | AP50 | AP75 | APs | APm | APl | fidelity AP50 | CPU time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| teacher `{args.teacher}` | 1 | " + " | ".join(f"{100 * teacher[m]:.1f}" for m in METRICS)
        + f" | - | {teacher.get('cpu_seconds', teacher['seconds']):.0f} |",
    ]
    for label in labels:
        rs = [r for r in results if r["label"] == label]
        fid = [r["fidelity_AP50"] for r in rs if r.get("fidelity_AP50") is not None]
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(_ms([r[m] for r in rs]) for m in METRICS)
                     + f" | {_ms(fid) if fid else '-'} | {_ms([r.get('cpu_seconds', r['seconds']) for r in rs], 1, 0)} |")
    lines += ["", verdict(results), ""] + curve_table(results, teacher) + [""] + cost_table(args, results, teacher)
    section = "\n".join(lines)
    if args.quick:  # a pipeline check: its numbers never replace the measured table
        out = Path(args.work)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "DETECTION-quick.md", section + "\n")
    else:
        write_section(ROOT / "docs" / "DETECTION.md", section, START, END)
        out = ROOT / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "detection.json", json.dumps(
        {"teacher": teacher, "runs": results, "settings": {k: v for k, v in vars(args).items() if k != "only"},
         "command": command.strip(), "device": "2-core CPU, no GPU"}, indent=1, default=float))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(data_dir()))
    parser.add_argument("--work", default="runs/bench-detection")
    parser.add_argument("--dataset", default="canvas-mnist", choices=["canvas-mnist", "canvas-fashion-mnist"])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--teacher", default="fcos-medium")
    parser.add_argument("--student", default="fcos-simple")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a busy 2-core CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="run only these row labels (default: the four main rows)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs only")
    parser.add_argument("--quick", action="store_true",
                        help="a few-minute CPU check of the whole pipeline: 400 training and 100 test canvases, "
                             "3 epochs, seed 0, report in --work (default runs/bench-detection-quick)")
    args = parser.parse_args()
    if args.quick:
        args.train, args.test, args.epochs, args.teacher_epochs, args.seeds = 400, 100, 3, 3, [0]
        if args.work == "runs/bench-detection":
            args.work = "runs/bench-detection-quick"
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data = load_data(parse_config(base_config(args, 0)))
    teacher_ckpt, teacher_record = train_teacher(args, work, data)
    teacher, _ = load_model(teacher_ckpt)
    wanted = set(args.only) if args.only else set(MAIN_ROWS)
    unknown = wanted - {label for label, _ in rows()}
    if unknown:
        parser.error(f"unknown row(s) {sorted(unknown)}; rows: {[label for label, _ in rows()]}")
    results: list[dict[str, Any]] = []
    for seed in args.seeds:  # seeds outermost: a stopped run still has every row for the first seeds
        for label, distill in rows():
            record_path = work / "rows" / f"{_slug(label)}-seed{seed}.json"
            if record_path.exists():
                results.append(json.loads(record_path.read_text()))
                continue
            if args.report_only or label not in wanted:
                continue
            record = run_row(args, work, data, teacher_ckpt, teacher, label, distill, seed)
            atomic_write_text(record_path, json.dumps(record, indent=1))
            results.append(record)
            print(f"{label:32s} seed {seed}: AP {100 * record['AP']:.1f} AP50 {100 * record['AP50']:.1f} "
                  f"{record['seconds']:.0f}s", flush=True)
            write_report(args, results, teacher_record)
    write_report(args, results, teacher_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
