"""Distillation throughput: samples/s and epoch time, five ways, in one run.

    (a) student alone            kdistill fit(), Supervised
    (b) KD, live teacher         kdistill fit(), teacher run on every batch
    (b') live teacher in bf16    (b) with ``distill.teacher_precision: bf16``: only the
                                 frozen teacher runs under bf16 autocast, the student
                                 trains in fp32
    (c) KD, cached teacher       kdistill fit(), teacher outputs computed once
    (c') the same with bf16      (c) with ``train.amp: bf16`` (mixed precision; on CPUs
                                 with AVX512-BF16 the matmuls run in bf16)
    (d) plain PyTorch loop       DataLoader over a TensorDataset, live teacher,
                                 loss.item() every step (as it is usually written)
    (e) torchdistill             the same job through torchdistill's own
                                 config-driven training box (separate venv)

The job is the issue's: MNIST (60,000 training images, no validation split),
student ``hinton-student`` (784-800-800-10), teacher ``hinton-teacher``
(784-1200-1200-10, frozen), KD at T=4 with alpha=0.9, SGD with momentum,
batch 128. The variants are interleaved (a, b, c, d, e, a, b, ...) and
repeated, and the table reports medians, so slow drifts in machine load hit
every variant alike; the load average before and after is printed with the
table. Epoch times exclude one-time work (building the teacher cache,
starting a process), which is reported separately for (c).

    python benchmarks/throughput.py --device cpu --epochs 2 --repeats 3 \\
        --torchdistill-python /tmp/td-venv/bin/python --write docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import data_dir, device_name, write_section
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdistill.config import OptimizerConfig, SchedulerConfig, TrainConfig
from kdistill.data import DataSplits, load_dataset
from kdistill.distiller import Distiller, Supervised
from kdistill.errors import DataError
from kdistill.models import create_model
from kdistill.train import fit, resolve_device

DATA_DIR = data_dir()
TEMPERATURE, ALPHA, LR, MOMENTUM = 4.0, 0.9, 0.05, 0.9
START, END = "<!-- throughput:start -->", "<!-- throughput:end -->"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_models(data: DataSplits, seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    teacher = create_model("hinton-teacher", data.input_shape, data.num_classes)
    student = create_model("hinton-student", data.input_shape, data.num_classes)
    return teacher, student


def train_cfg(device: torch.device, epochs: int, batch_size: int, amp: str = "auto") -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch_size, val_fraction=0.0, progress=False, amp=amp,
                       device=str(device), optimizer=OptimizerConfig(name="sgd", lr=LR, momentum=MOMENTUM),
                       scheduler=SchedulerConfig(name="constant"))


def run_kdistill(kind: str, data: DataSplits, device: torch.device, epochs: int, batch_size: int) -> dict:
    teacher, student = make_models(data, 0)
    if kind == "student":
        objective: nn.Module = Supervised(student)
        cache = False
    else:
        precision = "bf16" if kind == "kd-live-bf16-teacher" else "same"
        objective = Distiller(teacher=teacher, student=student, alpha=ALPHA, temperature=TEMPERATURE, teacher_precision=precision)
        cache = kind.startswith("kd-cached")
    amp = "bf16" if kind.endswith("bf16") else "auto"
    started = time.perf_counter()
    history = fit(objective, data, train_cfg(device, epochs, batch_size, amp), cache_teacher=cache)
    total = time.perf_counter() - started
    epoch_seconds = [e["seconds"] for e in history.epochs]
    return {"epoch_seconds": epoch_seconds, "setup_seconds": total - sum(epoch_seconds)}


def run_plain(data: DataSplits, device: torch.device, epochs: int, batch_size: int) -> dict:
    """The job as it is commonly written: DataLoader, live teacher, a host sync per step."""
    teacher, student = make_models(data, 0)
    teacher.to(device).eval()
    student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch_size, shuffle=True,
                        pin_memory=device.type == "cuda")
    kl = nn.KLDivLoss(reduction="batchmean")
    t = TEMPERATURE
    epoch_seconds = []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        running = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                teacher_logits = teacher(x)
            logits = student(x)
            loss = (1 - ALPHA) * nn.functional.cross_entropy(logits, y) + ALPHA * t * t * kl(
                torch.log_softmax(logits / t, dim=1), torch.softmax(teacher_logits / t, dim=1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
        sync(device)
        epoch_seconds.append(time.perf_counter() - start)
    return {"epoch_seconds": epoch_seconds, "setup_seconds": 0.0}


def run_torchdistill(python: str | None, device: torch.device, epochs: int, batch_size: int,
                     limit: int | None) -> dict:
    if not python:
        return {"error": "not requested (--torchdistill-python not given)"}
    script = Path(__file__).with_name("torchdistill_job.py")
    cmd = [python, str(script), "--data-dir", str(DATA_DIR), "--device", str(device), "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--temperature", str(TEMPERATURE), "--alpha", str(ALPHA),
           "--lr", str(LR), "--momentum", str(MOMENTUM), "--threads", str(torch.get_num_threads())]
    cmd += ["--limit-train", str(limit)] if limit else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": f"torchdistill job failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_mnist(device: torch.device) -> DataSplits:
    try:
        data = load_dataset("mnist", data_dir=DATA_DIR / "mnist", download=False)
    except DataError as error:
        sys.exit(f"MNIST is not available ({error}); skipping the benchmark.")
    return data


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def build_table(results: dict[str, list[dict]], n: int, batch_size: int) -> list[str]:
    labels = {
        "student": "(a) student alone (kdistill)",
        "kd-live": "(b) KD, live teacher (kdistill)",
        "kd-live-bf16-teacher": "(b') KD, live teacher in bf16, student fp32 (kdistill)",
        "kd-cached": "(c) KD, cached teacher (kdistill)",
        "kd-cached-bf16": "(c') KD, cached teacher, bf16 autocast (kdistill)",
        "plain": "(d) KD, plain PyTorch DataLoader loop",
        "torchdistill": "(e) KD, torchdistill",
    }
    labels = {k: v for k, v in labels.items() if k in results}
    medians: dict[str, float] = {}
    for key, runs in results.items():
        times = [t for r in runs if "epoch_seconds" in r for t in r["epoch_seconds"]]
        if times:
            medians[key] = statistics.median(times)
    base, plain = medians.get("student"), medians.get("plain")
    lines = [f"| variant (batch {batch_size}) | epoch s (median) | min-max | samples/s | vs (a) | vs (d) |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, label in labels.items():
        runs = results.get(key, [])
        if key not in medians:
            reason = next((r.get("error") for r in runs if "error" in r), "not run")
            lines.append(f"| {label} | not run: {reason} | | | | |")
            continue
        times = [t for r in runs if "epoch_seconds" in r for t in r["epoch_seconds"]]
        m = medians[key]
        lines.append(f"| {label} | {m:.2f} | {min(times):.2f}-{max(times):.2f} | {n / m:,.0f} | "
                     f"{m / base:.2f}x | {plain / m:.2f}x faster |" if base and plain else
                     f"| {label} | {m:.2f} | | {n / m:,.0f} | | |")
    setup = [r["setup_seconds"] for r in results.get("kd-cached", []) if "setup_seconds" in r]
    if setup:
        lines.append("")
        lines.append(f"One-time work outside the epochs in (c) (teacher cache and set-up): median "
                     f"{statistics.median(setup):.2f} s per run.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default="mnist", choices=["mnist"])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per variant per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit-train", type=int, help="first N training images only (smoke tests)")
    parser.add_argument("--variants", default="student,kd-live,kd-live-bf16-teacher,kd-cached,kd-cached-bf16,plain,torchdistill")
    parser.add_argument("--torchdistill-python", help="python of a venv with torchdistill installed")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--write", type=Path, help="put the table into this Markdown file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_mnist(device)
    if args.limit_train:
        data = data.subset(args.limit_train)
    load_before = os.getloadavg()
    variants = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:  # interleaved, so drifting machine load hits every variant alike
            if v == "plain":
                r = run_plain(data, device, args.epochs, args.batch_size)
            elif v == "torchdistill":
                r = run_torchdistill(args.torchdistill_python, device, args.epochs, args.batch_size,
                                     args.limit_train)
            else:
                r = run_kdistill(v, data, device, args.epochs, args.batch_size)
            results[v].append(r)
            print(f"repeat {rep} {v}: {json.dumps(r)}", flush=True)
    load_after = os.getloadavg()
    header = [
        f"Device: {device_name(device)}; torch {torch.__version__}; "
        f"{args.repeats} repeats x {args.epochs} epochs per variant, interleaved; "
        f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}.",
        "",
        "Command: `python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
    ]
    section = "\n".join(header + build_table(results, data.num_train, args.batch_size))
    print(section)
    if args.write:
        write_section(args.write, section, START, END)


if __name__ == "__main__":
    main()
