"""What consistent teaching buys: a conv student distilled with augmentation and a live teacher.

The experiment of issue "your own data at any size", after Beyer et al.
(2022, "Knowledge distillation: A good teacher is patient and consistent"):
the teacher sees the same augmented image as the student, on every step.

1. Fashion-MNIST is written out as an image folder (``--work/folder``:
   ``train/<class>/*.png``, ``test/<class>/*.png``, 28x28 grey PNGs; never
   committed), and every run reads that folder, so the runs go through the
   path a user's own images take.
2. The teacher, ``cnn-deep`` (288,170 parameters), trains once on it
   (:data:`TEACHER`: 15 epochs, random 2-pixel crops and left-right flips).
3. Per seed, the ``cnn-simple`` student with widths [16, 32, 64] (24,058
   parameters), same schedule for every row (:data:`SCHEDULE`), streamed
   from the folder by DataLoader workers:

   ``kd-aug``      distilled, torchvision RandomCrop(28, padding 2) and
                   RandomHorizontalFlip per image, the teacher run live on
                   the augmented batch;
   ``alone-aug``   the same student and augmentation, labels only;
   ``kd-plain``    distilled without augmentation (the teacher's logits
                   cached once, memory-mapped, keyed by sample index);
   ``alone-plain`` labels only, no augmentation.

   The KD settings are the ones ``kdistill tune`` chose on the validation
   split for the methods benchmark's Fashion-MNIST students (T=1.06,
   alpha=0.85, docs/METHODS_BENCHMARK.md); nothing here is tuned on the test
   set. Seed k fixes the student's initial weights, its validation split and
   its batch order.

Each run is a ``kdistill`` CLI command. A finished run writes
``--records/NAME.json`` (test accuracy of the best epoch, chosen on the
validation split, and of the last epoch; agreement and KL with the teacher;
best epoch; wall and CPU seconds; the command; the machine) and is never run
again; a killed run resumes from its ``last.safetensors`` when the benchmark
is started again. The table is rebuilt after every run (``--write``).

    OMP_NUM_THREADS=1 nice python benchmarks/augment_kd.py --work ~/kdistill-bench/augment \\
        --write docs/BENCHMARKS.md
    python benchmarks/augment_kd.py --quick --work /tmp/augment-quick   # a pipeline check
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import ROOT, data_dir, device_name, write_section

from kdistill.data import load_dataset
from kdistill.train.checkpoint import atomic_write_text

START, END = "<!-- augment-kd:start -->", "<!-- augment-kd:end -->"
CLASSES = ("0-t-shirt", "1-trouser", "2-pullover", "3-dress", "4-coat", "5-sandal", "6-shirt", "7-sneaker",
           "8-bag", "9-ankle-boot")
STUDENT = {"model": "cnn-simple", "options": {"widths": [16, 32, 64]}}
OPTIMIZER = {"name": "adamw", "lr": 0.002, "weight_decay": 0.0005}
SCHEDULE = {"epochs": 10, "batch_size": 128, "optimizer": OPTIMIZER, "scheduler": {"name": "cosine"}}
TEACHER = {"epochs": 15, "batch_size": 128, "seed": 0, "optimizer": OPTIMIZER, "scheduler": {"name": "cosine"}}
KD = {"temperature": 1.06, "alpha": 0.85}
AUGMENT = {"transforms": [{"name": "RandomCrop", "options": {"size": 28, "padding": 2}},
                          {"name": "RandomHorizontalFlip"}]}
# crop/flip, then TrivialAugment (Mueller & Hutter 2021: one random operation of random strength per image,
# nothing to tune), so that many training images no longer look like their label
STRONG = {"transforms": [*AUGMENT["transforms"], {"name": "TrivialAugmentWide"}]}
ROWS = {  # name: (label, distilled, augmentation)
    "kd-aug": ("KD, crop/flip, live teacher", True, AUGMENT),
    "alone-aug": ("student alone, crop/flip", False, AUGMENT),
    "kd-plain": ("KD, no augmentation (cached teacher)", True, None),
    "alone-plain": ("student alone, no augmentation", False, None),
    "kd-trivial": ("KD, crop/flip + TrivialAugment, live teacher", True, STRONG),
    "alone-trivial": ("student alone, crop/flip + TrivialAugment", False, STRONG),
}
# the pairs whose paired gain is the benchmark's target: (KD row, student-alone row, what they share)
PAIRS = (("kd-aug", "alone-aug", "with crop/flip"), ("kd-plain", "alone-plain", "without augmentation"),
         ("kd-trivial", "alone-trivial", "with crop/flip + TrivialAugment"))


def write_folder(folder: Path, limit: int | None) -> Path:
    """Fashion-MNIST as ``folder/{train,test}/<class>/NNNNN.png`` (reused once complete)."""
    from PIL import Image

    done = folder / ".complete"
    if done.exists():
        return folder
    data = load_dataset("fashion-mnist", data_dir=data_dir(), download=False, normalize=False)
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        n = len(y) if limit is None else min(len(y), limit if split == "train" else limit // 5)
        pixels = (x[:n, 0].numpy() * 255).round().astype(np.uint8)
        for c in CLASSES:
            (folder / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(pixels[i], "L").save(folder / split / CLASSES[int(y[i])] / f"{i:05d}.png")
    done.touch()
    return folder


def config_text(folder: Path, loader: str, augment: dict | None, teacher: Path | None, train: dict,
                workers: int) -> str:
    data = {"dataset": "image-folder", "options": {"path": str(folder)}, "loader": loader}
    if loader == "stream":
        data["workers"] = workers
    cfg: dict[str, Any] = {"name": "augment-kd", "data": data, "teacher": {"model": "cnn-deep"},
                           "student": STUDENT, "train": train}
    if teacher is None:  # the teacher's own run: `kdistill train` trains the config's teacher
        cfg["teacher_train"] = train
        cfg["teacher_augment"] = {"jitter": 2, "flip": True}
    else:
        cfg["teacher"]["checkpoint"] = str(teacher)
        cfg["distill"] = dict(KD)
    if augment:
        data["augment"] = augment
    return json.dumps(cfg, indent=1)  # JSON is YAML


def history(run: Path) -> list[dict[str, float]]:
    with (run / "history.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def evaluate(checkpoint: Path, teacher: Path | None, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "kdistill", "evaluate", str(checkpoint), "--json"]
    if teacher is not None:
        command += ["--teacher", str(teacher)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def machine() -> dict[str, Any]:
    return {"device": device_name(torch.device("cpu")), "torch": torch.__version__,
            "python": platform.python_version(), "threads": os.environ.get("OMP_NUM_THREADS")}


def run_once(name: str, command: list[str], role_dir: Path, teacher: Path | None, args: argparse.Namespace,
             meta: dict[str, Any]) -> dict[str, Any]:
    """Run one CLI command unless its record exists; resume it from ``last.safetensors`` if it was killed."""
    record_path = args.records / f"{name}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    last = role_dir / "last.safetensors"
    resume = ["--resume", str(last)] if last.exists() else ["--overwrite"] if role_dir.parent.exists() else []
    print(f"[{datetime.now():%H:%M}] {name}: {' '.join(command[2:] + resume)}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([*command, *resume, "--no-progress"], env=env, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    epochs = history(role_dir)
    best_epoch = max(range(len(epochs)), key=lambda i: (epochs[i]["val_score"], -i))
    record = {
        "name": name, **meta, "command": " ".join(["kdistill", *command[3:]]),
        "best_epoch": best_epoch + 1, "epochs": len(epochs),
        "val_accuracy_best": epochs[best_epoch]["val_score"], "val_accuracy_curve": [e["val_score"] for e in epochs],
        "best": evaluate(role_dir / "best.safetensors", teacher, env),
        "last": evaluate(role_dir / "last.safetensors", teacher, env),
        "wall_s": round(wall, 1), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "resumed": bool(resume and resume[0] == "--resume"), "machine": machine(),
        "benchmark_command": "python benchmarks/augment_kd.py " + " ".join(sys.argv[1:]),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.records.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="image folder and run folders")
    parser.add_argument("--records", type=Path, default=None, help="run records (default: "
                        "docs/benchmarks/augment, or --work/records with --quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS)[:4],
                        help="rows to run, in this order for each seed (default: the first four; the "
                        "TrivialAugment pair was run later, with its own records and teacher)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the streamed runs")
    parser.add_argument("--write", type=Path, default=None, help="put the table into this file between markers")
    parser.add_argument("--quick", action="store_true", help="1,000 training images, 1 epoch: a pipeline check")
    args = parser.parse_args(argv)
    args.records = args.records or (args.work / "records" if args.quick else ROOT / "docs/benchmarks/augment")
    folder = write_folder(args.work / ("folder-quick" if args.quick else "folder"), 1000 if args.quick else None)
    epochs = 1 if args.quick else None
    teacher_train = dict(TEACHER, epochs=epochs or TEACHER["epochs"])
    student_train = dict(SCHEDULE, epochs=epochs or SCHEDULE["epochs"])
    python = [sys.executable, "-m", "kdistill"]

    configs = args.work / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    cfg = configs / "teacher.yaml"
    cfg.write_text(config_text(folder, "memory", None, None, teacher_train, args.workers))
    out = args.work / "runs" / "teacher"
    run_once("teacher", [*python, "train", str(cfg), "-o", str(out)], out / "teacher", None, args,
             {"row": "teacher", "seed": 0, "model": "cnn-deep", "train": teacher_train,
              "augment": {"jitter": 2, "flip": True}})
    teacher = out / "teacher" / "best.safetensors"
    render(args)

    for seed in args.seeds:
        for row in args.rows:
            _, distilled, augment = ROWS[row]
            name = f"{row}-seed{seed}"
            cfg = configs / f"{name}.yaml"
            cfg.write_text(config_text(folder, "stream", augment, teacher, dict(student_train, seed=seed),
                                       args.workers))
            out = args.work / "runs" / name
            command = ([*python, "distill", str(cfg), "-o", str(out)] if distilled
                       else [*python, "train", str(cfg), "--role", "student", "-o", str(out)])
            run_once(name, command, out / "student", teacher, args,
                     {"row": row, "seed": seed, "model": "cnn-simple [16, 32, 64]", "train": dict(student_train, seed=seed),
                      "augment": augment, "distill": KD if distilled else None})
            render(args)


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(args: argparse.Namespace) -> None:
    records = {p.stem: json.loads(p.read_text()) for p in sorted(args.records.glob("*.json"))}
    default = args.records.resolve() == (ROOT / "docs/benchmarks/augment").resolve()
    text = table(records, args.records)
    print(text, flush=True)
    if args.write and not args.quick:  # each records folder has its own section
        start, end = (START, END) if default else (START.replace(":start", f"-{args.records.name}:start"),
                                                   END.replace(":end", f"-{args.records.name}:end"))
        write_section(args.write, text, start, end)


def table(records: dict[str, dict[str, Any]], folder: Path) -> str:
    try:
        where = folder.resolve().relative_to((ROOT / "docs").resolve()).as_posix()
        link = f"[docs/{where}/]({where}/)"
    except ValueError:  # records outside docs/ (--quick)
        link = str(folder)
    title = "" if folder.name == "augment" else f" ({folder.name})"
    lines = [f"### Consistent teaching: what augmentation with a live teacher buys{title}", ""]
    machines = sorted({r["machine"]["device"] for r in records.values()})
    invocations = sorted({r.get("benchmark_command", "") for r in records.values()} - {""})
    lines.append(f"{'; '.join(f'`{c}`' for c in invocations) or 'benchmarks/augment_kd.py'} on "
                 f"{', '.join(machines) or 'no run yet'}; one record per run, with its kdistill command, in "
                 f"{link}.")
    teacher = records.get("teacher")
    if teacher:
        lines += ["", f"Teacher: cnn-deep (288,170 parameters), {teacher['epochs']} epochs, crop/flip: test accuracy "
                  f"{100 * teacher['best']['accuracy']:.2f}% (best epoch {teacher['best_epoch']} on validation), "
                  f"{teacher['cpu_s'] / 60:.0f} CPU min."]
    lines += ["", "| student (cnn-simple [16, 32, 64], 24,058 parameters) | seeds | test acc., best epoch (%) "
              "| test acc., last epoch (%) | best epoch | agreement with teacher (%) | KL(teacher‖student) "
              "| CPU min per run |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_row: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records.values():
        if r["row"] in ROWS:
            by_row.setdefault(r["row"], {})[r["seed"]] = r
    for row, (label, _, _) in ROWS.items():
        runs = list(by_row.get(row, {}).values())
        if not runs:
            continue
        lines.append(
            f"| {label} | {len(runs)} | {mean_std([100 * r['best']['accuracy'] for r in runs])} "
            f"| {mean_std([100 * r['last']['accuracy'] for r in runs])} "
            f"| {', '.join(str(r['best_epoch']) for r in runs)} "
            f"| {mean_std([100 * r['best']['agreement'] for r in runs])} "
            f"| {mean_std([r['best']['kl'] for r in runs])} "
            f"| {statistics.mean(r['cpu_s'] for r in runs) / 60:.1f} |")
    lines += ["", *verdicts(by_row)]
    return "\n".join(lines)


def verdicts(by_row: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """Paired gains (same seed) of KD over the student alone, and the target: gain > 2 x the larger spread."""
    out = []
    for kd, alone, what in PAIRS:
        if kd not in by_row and alone not in by_row:
            continue
        seeds = sorted(set(by_row.get(kd, {})) & set(by_row.get(alone, {})))
        if not seeds:
            out.append(f"* KD gain {what}: not measured (no seed has both runs).")
            continue
        gains = [100 * (by_row[kd][s]["best"]["accuracy"] - by_row[alone][s]["best"]["accuracy"]) for s in seeds]
        alone_acc = [100 * by_row[alone][s]["best"]["accuracy"] for s in seeds]
        if len(seeds) < 2:
            out.append(f"* KD gain {what}, seed {seeds[0]} only: {gains[0]:+.2f} points (no spread yet).")
            continue
        spread = max(statistics.stdev(gains), statistics.stdev(alone_acc))
        met = statistics.mean(gains) > 2 * spread
        # the same comparison on the validation split (the epoch each run kept was chosen there), so that what
        # the table says does not rest on the test set alone
        val = [100 * (by_row[kd][s]["val_accuracy_best"] - by_row[alone][s]["val_accuracy_best"]) for s in seeds]
        out.append(f"* KD gain {what}, over the student alone trained the same way, {len(seeds)} seeds, paired: "
                   f"{statistics.mean(gains):+.2f} ± {statistics.stdev(gains):.2f} points (per seed "
                   f"{', '.join(f'{g:+.2f}' for g in gains)}; student alone's spread "
                   f"± {statistics.stdev(alone_acc):.2f}): target (gain > 2 x the larger spread, "
                   f"{2 * spread:.2f}) **{'met' if met else 'NOT met'}**. On the validation split: "
                   f"{statistics.mean(val):+.2f} ± {statistics.stdev(val):.2f} points.")
    return out


if __name__ == "__main__":
    main()
