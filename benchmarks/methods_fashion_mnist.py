"""Run every distillation method and scheme on Fashion-MNIST and write a results table.

    nice -n 10 .venv/bin/python benchmarks/methods_fashion_mnist.py --data-dir ../shared/data

One teacher (trained once, shared by every row and seed) and one student
architecture; each row is run with 3 seeds. Writes docs/METHODS_BENCHMARK.md
and docs/benchmarks/methods_fashion_mnist.{csv,json}. Finished (row, seed)
results are kept in the work folder, so an interrupted run continues where it
stopped. The default schedule (10,000 training images, a 15-epoch teacher,
8-epoch students) fits a 2-core CPU in about an hour; pass larger --train /
--epochs on a GPU. Compare rows with each other, not with published numbers.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from kdistill.config import parse_config
from kdistill.eval import evaluate_model, predict
from kdistill.experiment import load_data, load_model, train_model
from kdistill.schemes import run_experiment
from kdistill.train.checkpoint import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
CE = {"alpha": 0.0}  # feature methods: CE + weight * L, as in the RepDistiller / mdistiller tables


def rows(teacher_ckpt: str, teacher2_ckpt: str, teacher_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, distill section and overrides) for every row of the table."""
    def method(name: str, weight: float, **options: Any) -> dict[str, Any]:
        return {"distill": {**CE, "methods": [{"name": name, "weight": weight, "options": options}]}}

    def scheme(name: str, **options: Any) -> dict[str, Any]:
        return {"distill": {"alpha": 0.9, "scheme": {"name": name, "options": options}}}

    return [
        ("student alone (CE)", {"baseline": True}),
        ("kd", {"distill": {"alpha": 0.9, "method": "kd"}}),
        ("kd (T = 1, alpha = 0.5)", {"distill": {"alpha": 0.5, "temperature": 1.0, "method": "kd"}}),
        ("dkd", method("dkd", 1.0)),
        ("regression (logit MSE)", method("regression", 1.0)),
        ("fitnets", method("fitnets", 100.0, stage1_epochs=1)),
        ("at", method("at", 1000.0)),
        ("nst", method("nst", 50.0)),
        ("pkt", method("pkt", 30000.0)),
        ("rkd", method("rkd", 1.0)),
        ("sp", method("sp", 3000.0)),
        ("crd", method("crd", 0.8, num_negatives=1024)),
        ("kd + crd", {"distill": {"alpha": 0.9, "methods": [
            {"name": "kd"}, {"name": "crd", "weight": 0.8, "options": {"num_negatives": 1024}}]}}),
        ("born-again (2 generations)", scheme("born-again", generations=2)),
        ("multi-teacher (arithmetic)", scheme("multi-teacher", combine="arithmetic", teachers=[
            {"model": "cnn-medium", "checkpoint": teacher_ckpt},
            {"model": "cnn-medium", "checkpoint": teacher2_ckpt}])),
        ("multi-teacher (geometric)", scheme("multi-teacher", combine="geometric", teachers=[
            {"model": "cnn-medium", "checkpoint": teacher_ckpt},
            {"model": "cnn-medium", "checkpoint": teacher2_ckpt}])),
        ("takd (assistant cnn 32-64)", scheme("takd", assistants=[
            {"model": "cnn-simple", "options": {"widths": [32, 64]}}])),
        ("dml (2 peers, no teacher)", scheme("dml")),
        ("early-stopped teacher (epoch 5)", scheme("early-stop", teacher_epoch=5, teacher_dir=teacher_dir)),
        ("noisy student (cnn-medium student)", {**scheme("noisy-student", rounds=1, input_noise=0.1, dropout=0.3),
                                                "student": {"model": "cnn-medium"}}),
        ("transfer: MUNGE x2", scheme("transfer", source="munge", multiplier=2)),
        ("transfer: unlabeled Fashion-MNIST", scheme("transfer", source="dataset", dataset="fashion-mnist",
                                                     limit=20000)),
    ]


def base_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "data": {"dataset": "fashion-mnist", "data_dir": args.data_dir, "download": False,
                 "limit_train": args.train, "limit_test": args.test},
        "teacher": {"model": "cnn-medium"},
        "student": {"model": "cnn-simple"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": seed, "progress": False,
                  "device": args.device,
                  "optimizer": {"name": "adamw", "lr": 0.003}},
    }


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent.parent / "shared" / "data"))
    parser.add_argument("--work", default="runs/bench-methods")
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="run only rows whose label starts with one of these")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the finished (cached) runs without training anything")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    started = time.perf_counter()

    # the shared teachers: trained once (seed 0 and 1), every epoch kept for the early-stop row
    teacher_paths = []
    for k in (0, 1):
        ckpt = work / f"teacher-{k}" / "best.safetensors"
        if not ckpt.exists():
            cfg = parse_config({**base_config(args, k), "train": {**base_config(args, k)["train"],
                                "epochs": args.teacher_epochs, "batch_size": 64, "keep_epochs": True}})
            train_model(cfg, "teacher", out_dir=ckpt.parent)
        teacher_paths.append(ckpt)
    data = load_data(parse_config(base_config(args, 0)))
    teacher, _ = load_model(teacher_paths[0])
    teacher_logits = predict(teacher, data.x_test)
    teacher_metrics = evaluate_model(teacher, data, latency=False)

    # loading all 60k images for the unlabeled-transfer row is slow on a busy CPU: load once per process
    import kdistill.schemes.transfer as transfer_scheme
    transfer_scheme.load_dataset = functools.lru_cache(maxsize=2)(transfer_scheme.load_dataset)

    results: list[dict[str, Any]] = []
    all_rows = rows(str(teacher_paths[0]), str(teacher_paths[1]), str(teacher_paths[0].parent))
    # seeds outermost: an interrupted run still has every row for the first seeds
    for seed in args.seeds:
        for label, spec in all_rows:
            if args.only and not any(label.startswith(o) for o in args.only):
                continue
            slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
            record_path = work / "rows" / f"{slug}-seed{seed}.json"
            if record_path.exists():
                results.append(json.loads(record_path.read_text()))
                continue
            if args.report_only:
                continue
            raw = base_config(args, seed)
            raw["output_dir"] = str(work / "rows" / f"{slug}-seed{seed}")
            raw["teacher"]["checkpoint"] = str(teacher_paths[0])
            for key, value in spec.items():
                if key != "baseline":
                    raw[key] = value
            cfg = parse_config(raw)
            t0 = time.perf_counter()
            if spec.get("baseline"):
                model = train_model(cfg, "student", data=data, out_dir=Path(raw["output_dir"])).model
            else:
                model = run_experiment(cfg, data=data).model
            seconds = time.perf_counter() - t0
            m = evaluate_model(model, data, teacher_logits=teacher_logits, latency=False)
            record = {"label": label, "seed": seed, "accuracy": m["accuracy"], "agreement": m["agreement"],
                      "kl": m["kl"], "seconds": seconds, "params": m["params"]}
            atomic_write_text(record_path, json.dumps(record))
            results.append(record)
            print(f"{label:40s} seed {seed}: acc {m['accuracy']:.4f} agree {m['agreement']:.4f} "
                  f"kl {m['kl']:.4f} {seconds:.0f}s", flush=True)
            write_report(args, results, teacher_metrics, time.perf_counter() - started)
    write_report(args, results, teacher_metrics, time.perf_counter() - started)
    return 0


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def not_run_line(results: list[dict[str, Any]]) -> str:
    """Which registered methods / schemes have no row with results, computed, never assumed."""
    from kdistill.registry import METHODS
    from kdistill.schemes import scheme_names

    done = {r["label"] for r in results}
    used = set()
    for label, spec in rows("", "", ""):
        if label in done:
            d = spec.get("distill", {})
            used |= {m["name"] for m in d.get("methods", [])} | {d.get("method", "")}
            used |= {d["scheme"]["name"]} if "scheme" in d else set()
    text_only = {"attention-maps", "hidden-states"}  # they need token sequences and a transformer pair
    missing = sorted((set(METHODS.names()) | set(scheme_names())) - used - text_only)
    text_note = (" The transformer methods (attention-maps, hidden-states) need a transformer teacher and "
                 "student and are not run on this image pair; see docs/NLP.md.")
    if not missing:
        return "Methods not run: none of the image methods and schemes; every one has a row above." + text_note
    return (f"Methods not run: {', '.join(missing)} (no finished run: the benchmark was stopped before "
            "reaching them, or they were left out with --only)." + text_note)


def write_report(args: argparse.Namespace, results: list[dict[str, Any]], teacher: dict[str, Any],
                 total_seconds: float) -> None:
    order = [label for label, _ in rows("", "", "")]
    labels = [label for label in order if any(r["label"] == label for r in results)]
    table = []
    for label in labels:
        rs = [r for r in results if r["label"] == label]
        table.append({"method": label, "seeds": len(rs),
                      "accuracy_%": _ms([r["accuracy"] for r in rs], 100),
                      "agreement_%": _ms([r["agreement"] for r in rs], 100),
                      "kl": _ms([r["kl"] for r in rs], 1, 3),
                      "wall_s": _ms([r["seconds"] for r in rs], 1, 0)})
    out = ROOT / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "methods_fashion_mnist.json", json.dumps(
        {"runs": results, "teacher": teacher, "settings": vars(args)}, indent=2, default=float))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(out / "methods_fashion_mnist.csv", buf.getvalue())
    argv = [a for a in sys.argv[1:] if a != "--report-only"]
    command = "python benchmarks/methods_fashion_mnist.py " + " ".join(argv)
    total_seconds = sum(r["seconds"] for r in results)
    lines = [
        "# Distillation methods on Fashion-MNIST",
        "",
        f"Command: `{command.strip()}` ({total_seconds / 60:.0f} min of runs in the table).",
        "",
        f"Device: CPU: 2 cores ({cpu_name()}), torch {torch.__version__}, {args.threads} torch thread(s); "
        "another benchmark shared the machine, so wall times are only comparable within this table.",
        "",
        f"Data: a fixed random {args.train}-image subset of the Fashion-MNIST training set (10% of it held "
        f"out for picking the best epoch) and a fixed random {args.test}-image subset of the test set. "
        f"Teacher: `cnn-medium` (94k parameters) trained once for {args.teacher_epochs} epochs, batch 64 "
        f"(test accuracy {100 * teacher['accuracy']:.2f}%), shared by every row. "
        f"Student: `cnn-simple` (5,178 parameters) unless the row says otherwise. Schedule: {args.epochs} epochs, "
        f"batch {args.batch_size}, AdamW lr 0.003, cosine decay, no augmentation; seeds "
        f"{', '.join(map(str, args.seeds))} (the seeds column counts those finished per row). Output methods "
        "use alpha = 0.9, T = 4 unless the row says otherwise; feature methods are CE + weight x loss (weights: FitNets 100 with 1 hint-only "
        "epoch, AT 1000, NST 50, PKT 30000, RKD 1 (distance 25, angle 50), SP 3000, CRD 0.8 with 1024 "
        "negatives; the penultimate feature module `features` of both nets). Agreement and KL are measured "
        "against the shared teacher on the test set.",
        "",
        "Values are mean ± standard deviation over the finished seeds (a single value where only one "
        "seed finished). The weights are the papers' (or RepDistiller's) defaults, not tuned for this pair.",
        "",
        "| method | seeds | accuracy (%) | agreement (%) | KL(teacher‖student) | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(f"| {row['method']} | {row['seeds']} | {row['accuracy_%']} | {row['agreement_%']} | "
                     f"{row['kl']} | {row['wall_s']} |")
    lines += ["", "Wall time covers training (and, for schemes, every run they make) plus test-set evaluation. "
              "Born-again, TAKD and noisy student train several models; DML trains two peers; multi-teacher "
              "distils from the shared teacher and a second `cnn-medium` trained with seed 1.", ""]
    lines.append(not_run_line(results))
    atomic_write_text(ROOT / "docs" / "METHODS_BENCHMARK.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
