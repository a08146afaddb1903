"""The variational student against the dense distilled student on MNIST and Fashion-MNIST.

    KDISTILL_DATA=/work/shared/data nice -n 10 .venv/bin/python benchmarks/variational.py

Per data set: one teacher (``mlp-deep``, trained once with seed 0, shared by
every row), then per seed the same student architecture (``mlp-medium``)
distilled twice with the same schedule: dense, and variational (sparse
variational dropout layers, the annealed KL term, sparsified at log alpha 3).
Every finished row (data set, kind, seed) is stored in
docs/benchmarks/variational.json as soon as it ends and never rerun; rows made
with another schedule are dropped and redone. ``--write`` puts the summary
table into docs/VARIATIONAL.md between its markers.

Each row records test accuracy, parameters, non-zero parameters, the student's
file size (dense safetensors, or the sparse bitmask file), the ONNX export's
size, the per-epoch history (to check that the curves flatten) and, for the
variational student, a sweep of the pruning threshold over the trained model.
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

from kdistill.compress.export import export_model, onnx_bytes
from kdistill.compress.variational import load_variational, sparsify, sparsity_report
from kdistill.config import parse_config
from kdistill.eval import accuracy, evaluate_model, predict
from kdistill.experiment import load_data, load_model, run_distill, seeded, train_model
from kdistill.train.checkpoint import atomic_write_text

OUT = ROOT / "docs" / "benchmarks" / "variational.json"
DOC = ROOT / "docs" / "VARIATIONAL.md"
START, END = "<!-- variational:start -->", "<!-- variational:end -->"
DATASETS = ("mnist", "fashion-mnist")
THRESHOLDS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


def schedule(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that defines a row's numbers; a row made under another schedule is redone."""
    return {"teacher": args.teacher, "student": args.student, "teacher_epochs": args.teacher_epochs,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "alpha": args.alpha,
            "temperature": args.temperature, "threshold": args.threshold, "kl_weight": args.kl_weight,
            "anneal_epochs": args.anneal_epochs}


def config(args: argparse.Namespace, dataset: str, work: Path, variational: bool) -> dict[str, Any]:
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "progress": False,
             "optimizer": {"name": "adamw", "lr": args.lr}}
    student: dict[str, Any] = {"model": args.student}
    if variational:
        student["variational"] = {"threshold": args.threshold, "kl_weight": args.kl_weight,
                                  "anneal_epochs": args.anneal_epochs}
    return {"name": f"variational-bench-{dataset}", "output_dir": str(work),
            "data": {"dataset": dataset, "data_dir": str(data_dir()), "download": False},
            "teacher": {"model": args.teacher}, "student": student,
            "distill": {"alpha": args.alpha, "temperature": args.temperature},
            "train": train, "teacher_train": {**train, "epochs": args.teacher_epochs}}


def _history(epochs: list[dict[str, float]]) -> list[dict[str, float]]:
    keep = ("epoch", "loss", "kd", "student", "variational_kl", "val_score", "seconds")
    return [{k: round(float(e[k]), 5) for k in keep if k in e} for e in epochs]


def onnx_size(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    return len(onnx_bytes(model, input_shape))


def run_teacher(args, dataset, work, data) -> tuple[dict[str, Any], torch.nn.Module]:
    cfg = parse_config(config(args, dataset, work, False))
    started, cpu = time.perf_counter(), time.process_time()
    result = train_model(cfg, "teacher", data=data, out_dir=work / "teacher")
    row = {"accuracy": result.metrics["accuracy"], "params": result.metrics["params"],
           "size_bytes": result.metrics["size_bytes"], "checkpoint": str(result.checkpoint),
           "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
           "history": _history(result.history)}
    return row, result.model


def run_student(args, dataset, work, data, teacher, seed: int, variational: bool) -> dict[str, Any]:
    kind = "variational" if variational else "dense"
    out = work / f"{kind}-seed{seed}"
    cfg = seeded(parse_config(config(args, dataset, work, variational)), seed)
    started, cpu = time.perf_counter(), time.process_time()
    result = run_distill(cfg, data=data, teacher=teacher, out_dir=out)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    m = result.metrics
    row: dict[str, Any] = {"accuracy": m["accuracy"], "agreement": m["agreement"], "params": m["params"],
                           "size_bytes": m["size_bytes"], "seconds": seconds, "cpu_seconds": cpu,
                           "history": _history(result.history), "checkpoint": str(result.checkpoint)}
    shape = tuple(data.input_shape)
    if not variational:
        row.update(nonzero_params=sum(int((p != 0).sum()) for p in result.model.parameters()),
                   onnx_bytes=onnx_size(result.model, shape))
        return row
    onnx_path = export_model(result.checkpoint, "onnx", out / "student" / "sparse.onnx")
    report = sparsity_report(result.model)
    row.update(nonzero_params=m["nonzero_params"], weight_sparsity=m["weight_sparsity"],
               compression=m["compression"], dense_size_bytes=m["dense_size_bytes"],
               onnx_bytes=onnx_path.size_bytes, onnx_dense_bytes=onnx_size(result.model, shape),
               layers=report.to_dict()["layers"])
    # the same trained posterior, pruned at other thresholds (no retraining)
    posterior, _ = load_variational(out / "student" / "last.safetensors")
    sweep = []
    for threshold in THRESHOLDS:
        plain = sparsify(posterior, threshold)
        rep = sparsity_report(plain)
        sweep.append({"threshold": threshold, "accuracy": accuracy(predict(plain, data.x_test), data.y_test),
                      "nonzero_params": rep.nonzero_params, "weight_sparsity": rep.weight_sparsity})
    row["threshold_sweep"] = sweep
    return row


def load_rows(path: Path, current: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    return [r for r in saved.get("rows", []) if r.get("schedule") == current]


def save(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    payload = {"command": "python benchmarks/variational.py " + " ".join(sys.argv[1:]),
               "device": args.device_label, "rows": rows, "summary": summary(rows)}
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ± {statistics.stdev(values) * scale:,.{digits}f}"


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for dataset in DATASETS:
        for kind in ("teacher", "dense", "variational"):
            rs = [r for r in rows if r["dataset"] == dataset and r["kind"] == kind]
            if not rs:
                continue
            entry = {"dataset": dataset, "kind": kind, "seeds": [r["seed"] for r in rs],
                     "accuracy_%": _ms([r["accuracy"] for r in rs], 100),
                     "params": rs[0]["params"],
                     "nonzero_params": _ms([r.get("nonzero_params", r["params"]) for r in rs], 1, 0),
                     "size_bytes": _ms([r["size_bytes"] for r in rs], 1, 0),
                     "onnx_bytes": _ms([r["onnx_bytes"] for r in rs if "onnx_bytes" in r], 1, 0),
                     "seconds": _ms([r["seconds"] for r in rs], 1, 0),
                     "cpu_seconds": _ms([r["cpu_seconds"] for r in rs], 1, 0)}
            # how flat the end of the curve is: spread of the validation accuracy over the last 5 epochs
            spreads = [max(h["val_score"] for h in r["history"][-5:]) - min(h["val_score"] for h in r["history"][-5:])
                       for r in rs]
            entry["val_last5_spread_%"] = _ms(spreads, 100)
            if kind == "variational":
                entry["weight_sparsity_%"] = _ms([r["weight_sparsity"] for r in rs], 100)
                entry["compression"] = _ms([r["compression"] for r in rs], 1, 1)
                entry["onnx_dense_bytes"] = _ms([r["onnx_dense_bytes"] for r in rs], 1, 0)
            out.append(entry)
    return out


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """Accuracy and non-zero parameters of the trained variational students pruned at other thresholds."""
    lines = ["| data set | log-alpha threshold | test accuracy % | non-zero parameters | zero weights % |",
             "|---|---|---|---|---|"]
    for dataset in DATASETS:
        rs = [r for r in rows if r["dataset"] == dataset and r["kind"] == "variational"]
        for i, threshold in enumerate(THRESHOLDS):
            points = [r["threshold_sweep"][i] for r in rs]
            if points:
                lines.append(f"| {dataset} | {threshold:g} | {_ms([p['accuracy'] for p in points], 100)} | "
                             f"{_ms([p['nonzero_params'] for p in points], 1, 0)} | "
                             f"{_ms([p['weight_sparsity'] for p in points], 100)} |")
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | model | seeds | test accuracy % | parameters | non-zero parameters | zero weights % "
             "| file, bytes (safetensors) | ONNX file, bytes | val. accuracy spread, last 5 epochs (points) "
             "| CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"teacher": "teacher", "dense": "dense distilled student", "variational": "variational student"}
    for e in summary(rows):
        lines.append(f"| {e['dataset']} | {names[e['kind']]} | {len(e['seeds'])} | {e['accuracy_%']} | "
                     f"{e['params']:,} | {e['nonzero_params']} | {e.get('weight_sparsity_%', '-')} | "
                     f"{e['size_bytes']} | {e['onnx_bytes']} | {e['val_last5_spread_%']} | {e['cpu_seconds']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", default="runs/bench-variational")
    parser.add_argument("--teacher", default="mlp-deep")
    parser.add_argument("--student", default="mlp-medium")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--threshold", type=float, default=3.0)
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--anneal-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (on a busy 2-core machine two threads spin more than they compute)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--write", type=Path, help="put the table into this Markdown file (docs/VARIATIONAL.md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    args.device_label = device_name(torch.device("cpu"))
    current = schedule(args)
    rows = load_rows(args.out, current)

    def done(dataset: str, kind: str, seed: int) -> dict[str, Any] | None:
        return next((r for r in rows if (r["dataset"], r["kind"], r["seed"]) == (dataset, kind, seed)), None)

    def add(dataset: str, kind: str, seed: int, row: dict[str, Any]) -> None:
        rows.append({"dataset": dataset, "kind": kind, "seed": seed, "schedule": current, **row})
        save(args.out, rows, args)
        print(f"{dataset:14s} {kind:12s} seed {seed}: accuracy {100 * row['accuracy']:.2f}%  "
              f"non-zero {row.get('nonzero_params', row['params']):,}/{row['params']:,}  "
              f"{row['seconds']:.0f}s", flush=True)

    for dataset in args.datasets:
        work = Path(args.work) / dataset
        data = load_data(parse_config(config(args, dataset, work, False)))
        row = done(dataset, "teacher", 0)
        if row is not None and Path(row["checkpoint"]).exists():
            teacher, _ = load_model(row["checkpoint"])
        else:
            if row is not None:  # its checkpoint is gone: the teacher must be trained again
                rows.remove(row)
            row, teacher = run_teacher(args, dataset, work, data)
            add(dataset, "teacher", 0, row)
        teacher_acc = evaluate_model(teacher, data, latency=False)["accuracy"]
        assert abs(teacher_acc - row["accuracy"]) < 1e-9, "the reloaded teacher differs from the one measured"
        # seeds outermost: an interrupted run still has both kinds for the first seeds
        for seed in args.seeds:
            for kind in ("dense", "variational"):
                if done(dataset, kind, seed) is None:
                    add(dataset, kind, seed, run_student(args, dataset, work, data, teacher, seed,
                                                         variational=kind == "variational"))
    print(table(rows))
    print(sweep_table(rows))
    if args.write:
        # the command that measured the rows: --write only renders them
        shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--write" and sys.argv[i] != "--write"]
        command = " ".join(["python benchmarks/variational.py", *shown])
        section = (f"Command: `KDISTILL_DATA=/work/shared/data {command}`  \n"
                   f"Machine: {args.device_label}.\n\n" + table(rows)
                   + "\n\nThe trained variational students pruned at other thresholds (no retraining; "
                   "3 is the trained one):\n\n" + sweep_table(rows))
        write_section(args.write, section, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
