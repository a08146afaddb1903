"""SST-2 benchmark: a fine-tuned MiniLM teacher and its distilled students, on the CPU.

    nice -n 10 .venv/bin/python benchmarks/sst2.py            # the schedule in docs/NLP.md
    .venv/bin/python benchmarks/sst2.py --quick               # a smoke run of every step (minutes)

1. Teacher: all-MiniLM-L6-v2 + a classification head (``hf-classifier``),
   fine-tuned on ``--teacher-train`` SST-2 training phrases.
2. Half-depth student (``hf-distil``): teacher layers 0, 2, 4 and head, distilled
   with soft targets plus DistilBERT's cosine hidden-state loss.
3. Tiny student (``tiny-transformer``, <= 1/10 of the teacher's parameters),
   trained with and without distillation over ``--seeds`` seeds.
4. BiLSTM (Tang et al. 2019) distilled over the same tokenizer's ids.

Every model is scored on SST-2 dev and test, measured (parameters, safetensors
size, CPU latency at batch 1 and length 64 with PyTorch and ONNX Runtime) and
compared with the teacher (agreement, KL). Results go to ``--out`` as JSON and,
with ``--docs``, into a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from kdistill.config import ModelConfig, OptimizerConfig, SchedulerConfig, TrainConfig
from kdistill.data import load_dataset
from kdistill.distiller import Distiller, Supervised
from kdistill.eval import (
    accuracy,
    cpu_latency,
    parameter_count,
    predictive_kl,
    size_on_disk,
    top1_agreement,
)
from kdistill.experiment import model_spec
from kdistill.methods.hidden_states import HiddenStateMatching
from kdistill.models import create_model
from kdistill.text.deploy import export_onnx, onnx_latency
from kdistill.text.inference import predict_by_length
from kdistill.train import fit
from kdistill.train.checkpoint import atomic_write_text
from kdistill.train.loop import split_validation

MAX_LENGTH = 64


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def schedule(epochs: int, batch: int, lr: float, seed: int = 0) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch, seed=seed, device="cpu", progress=False,
                       val_fraction=0.05, grad_clip=1.0,
                       optimizer=OptimizerConfig(name="adamw", lr=lr, weight_decay=0.01),
                       scheduler=SchedulerConfig(name="cosine", warmup_epochs=0.1 * epochs))


def measure(name: str, model: torch.nn.Module, dev, test, teacher_dev, teacher_test,
            out: Path, threads: int) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Accuracy, fidelity and cost of one model."""
    model.eval()
    dev_logits = predict_by_length(model, dev.x_test)
    test_logits = predict_by_length(model, test.x_test)
    row: dict[str, Any] = {
        "model": name, "params": parameter_count(model), "size_bytes": size_on_disk(model),
        "dev_acc": accuracy(dev_logits, dev.y_test), "test_acc": accuracy(test_logits, test.y_test),
    }
    if teacher_dev is not None:
        row["agreement_dev"] = top1_agreement(student_logits=dev_logits, teacher_logits=teacher_dev)
        row["kl_dev"] = predictive_kl(teacher_logits=teacher_dev, student_logits=dev_logits)
        row["agreement_test"] = top1_agreement(student_logits=test_logits, teacher_logits=teacher_test)
    try:
        row["onnx_path"] = str(export_onnx(model, out / "onnx" / f"{slug(name)}.onnx", MAX_LENGTH))
    except Exception as error:  # an exporter gap must not lose the other numbers
        row["onnx_error"] = f"{type(error).__name__}: {str(error)[:200]}"
    measure_latency([(row, model)], threads, rounds=1)  # refined at the end, interleaved
    print(json.dumps(row), flush=True)
    return (row, dev_logits, test_logits)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def measure_latency(models: list[tuple[dict[str, Any], torch.nn.Module]], threads: int,
                    rounds: int = 3) -> None:
    """Batch 1, length 64, PyTorch and ONNX Runtime; the minimum over interleaved rounds of
    medians, because other jobs on a shared machine only ever add time."""
    for row, _ in models:
        row.setdefault("torch_ms", float("inf"))
        row.setdefault("onnx_ms", float("inf") if row.get("onnx_path") else None)
    for _ in range(rounds):
        for row, model in models:
            ms = cpu_latency(model, (MAX_LENGTH,), batch_size=1, warmup=3, repeats=15,
                             threads=threads)["ms_per_sample"]
            row["torch_ms"] = min(row["torch_ms"], ms)
            if row.get("onnx_path"):
                ms = onnx_latency(row["onnx_path"], model.example_input(1, MAX_LENGTH), warmup=5,
                                  repeats=30, threads=threads)
                row["onnx_ms"] = min(row["onnx_ms"], ms)


def checkpoint_meta(name: str, options: dict, data, model) -> dict[str, Any]:
    return {"role": name, "model_spec": model_spec(ModelConfig(model=name, options=options), data, model)}


def cached_teacher_logits(teacher_logits_all: torch.Tensor, n: int, cfg: TrainConfig) -> torch.Tensor:
    """The cached teacher logits in the order fit() sees the training rows after its split."""
    index = torch.arange(n)
    kept, _, _, _ = split_validation(index, index, cfg.val_fraction, cfg.seed)
    return teacher_logits_all[kept]


def train_student(kind: str, data, cfg: TrainConfig, out: Path, *, teacher=None, teacher_logits=None,
                  alpha: float = 0.9, temperature: float = 2.0, options: dict | None = None,
                  methods=(), init_teacher=None) -> torch.nn.Module:
    options = dict(options or {})
    if kind == "hf-distil":
        student = create_model(kind, (MAX_LENGTH,), 2, teacher_model=init_teacher, **options)
    else:
        student = create_model(kind, (MAX_LENGTH,), 2, **options)
    if teacher is None:
        objective = Supervised(student)
        fit(objective, data, cfg, out_dir=out, metadata=checkpoint_meta(kind, options, data, student),
            description=out.name)
    else:
        objective = Distiller(teacher=teacher, student=student, alpha=alpha, temperature=temperature, methods=methods,
                              teacher_outputs=teacher_logits)  # precomputed: the teacher never runs
        fit(objective, data, cfg, out_dir=out, cache_teacher=False,
            metadata=checkpoint_meta(kind, options, data, student), description=out.name)
    from kdistill.train import load_weights

    load_weights(student, out / "best.safetensors")
    return student


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets: checks every step in minutes")
    parser.add_argument("--teacher-train", type=int, default=2000, help="phrases the teacher is fine-tuned on")
    parser.add_argument("--half-train", type=int, default=2000, help="phrases for the half-depth student")
    parser.add_argument("--transfer", type=int, default=5000, help="phrases for the tiny students")
    parser.add_argument("--half-epochs", type=int, default=1)
    parser.add_argument("--tiny-epochs", type=int, default=2)
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--no-baseline", action="store_true", help="tiny students with KD only (no labels-only twin)")
    parser.add_argument("--stages", default="half,tiny,bilstm",
                        help="which students to train after the teacher (comma list of half, tiny, bilstm)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/sst2-bench")
    parser.add_argument("--reuse-teacher", action="store_true",
                        help="load OUT/teacher/best.safetensors instead of fine-tuning again")
    parser.add_argument("--docs", default=None, help="write the Markdown table here (e.g. docs/NLP.md)")
    parser.add_argument("--latency-only", action="store_true",
                        help="re-measure latency (and the BiLSTM's accuracy) from the checkpoints in OUT")
    args = parser.parse_args(argv)
    if args.latency_only:
        return latency_only(Path(args.out), args.threads)
    if args.quick:
        args.teacher_train, args.half_train, args.transfer, args.seeds, args.tiny_epochs = 64, 64, 128, 1, 1
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    dev = load_dataset("sst2", max_length=MAX_LENGTH, test_split="dev")
    test = load_dataset("sst2", max_length=MAX_LENGTH, test_split="test")
    if args.quick:
        dev, test = dev.subset(None, 64), test.subset(None, 64)
    transfer = dev.subset(args.transfer, None, seed=0)
    teacher_data = dev.subset(args.teacher_train, None, seed=0)  # nested: the same draw's first rows
    half_data = dev.subset(args.half_train, None, seed=0)

    # 1. teacher -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    stage("teacher")
    teacher = create_model("hf-classifier", (MAX_LENGTH,), 2, pretrained="minilm")
    teacher_ckpt = out / "teacher" / "best.safetensors"
    if not (args.reuse_teacher and teacher_ckpt.exists()):
        fit(Supervised(teacher), teacher_data, schedule(1, 32, 5e-5), out_dir=out / "teacher",
            metadata=checkpoint_meta("hf-classifier", {"pretrained": "minilm"}, teacher_data, teacher),
            description="teacher")
        timings["teacher_train_s"] = time.perf_counter() - t0
    else:  # the fine-tuning time recorded in the reused checkpoint
        from kdistill.train import read_checkpoint

        history = read_checkpoint(teacher_ckpt)[1].get("history", [])
        timings["teacher_train_s"] = sum(epoch.get("seconds", 0.0) for epoch in history)
    from kdistill.train import load_weights

    load_weights(teacher, teacher_ckpt)
    rows = []
    row, teacher_dev, teacher_test = measure("teacher", teacher, dev, test, None, None, out, args.threads)
    rows.append(row)
    timed = [(row, teacher)]
    save_partial(out, rows, timings)
    t0 = time.perf_counter()
    stages = set(args.stages.split(","))
    teacher_transfer = None
    if stages & {"tiny", "bilstm"}:
        teacher_transfer = predict_by_length(teacher, transfer.x_train)
        timings["teacher_label_transfer_s"] = time.perf_counter() - t0

    if "half" in stages:
        stage("half-depth student")
        # 2. half-depth student: every other layer, KD + cosine hidden-state loss --------------
        t0 = time.perf_counter()
        hidden = HiddenStateMatching(layers={"teacher": [1, 3, 5], "student": [0, 1, 2]}, loss="cosine")
        half = train_student("hf-distil", half_data, schedule(args.half_epochs, 32, 5e-5), out / "half",
                             teacher=teacher, alpha=0.5, temperature=2.0, methods=[(hidden, 1.0)],
                             init_teacher=teacher)
        timings["half_train_s"] = time.perf_counter() - t0
        rows.append(measure("half-depth (hf-distil, KD+hidden)", half, dev, test, teacher_dev, teacher_test,
                            out, args.threads)[0])
        timed.append((rows[-1], half))
        save_partial(out, rows, timings)

    # 3. tiny students, with and without distillation ------------------------------------------
    tiny_opts = {"layers": args.tiny_layers, "hidden": 128, "heads": 4, "embedding_dim": 32,
                 "embeddings_from": "minilm"}
    tiny_rows: dict[str, list[dict[str, Any]]] = {"kd": [], "no-kd": []}
    t0 = time.perf_counter()
    for seed in range(args.seeds if "tiny" in stages else 0):
        stage(f"tiny students, seed {seed}")
        cfg = schedule(args.tiny_epochs, 64, 1e-3, seed)
        torch.manual_seed(seed)
        kd_model = train_student("tiny-transformer", transfer, cfg, out / f"tiny-kd-{seed}", teacher=teacher,
                                 teacher_logits=teacher_transfer, alpha=0.9, temperature=2.0,
                                 options=tiny_opts)
        tiny_rows["kd"].append(measure(f"tiny KD seed {seed}", kd_model, dev, test, teacher_dev,
                                       teacher_test, out, args.threads)[0])
        timed.append((tiny_rows["kd"][-1], kd_model))
        if not args.no_baseline:
            torch.manual_seed(seed)
            plain = train_student("tiny-transformer", transfer, cfg, out / f"tiny-plain-{seed}",
                                  options=tiny_opts)
            tiny_rows["no-kd"].append(measure(f"tiny no-KD seed {seed}", plain, dev, test, teacher_dev,
                                              teacher_test, out, args.threads)[0])
            timed.append((tiny_rows["no-kd"][-1], plain))
        save_partial(out, rows + tiny_rows["kd"] + tiny_rows["no-kd"], timings)
    timings["tiny_all_s"] = time.perf_counter() - t0

    if "bilstm" in stages:
        stage("bilstm")
        # 4. BiLSTM baseline (Tang et al. 2019), distilled --------------------------------------
        t0 = time.perf_counter()
        lstm = train_student("bilstm", transfer, schedule(args.tiny_epochs, 64, 2e-3), out / "bilstm-kd",
                             teacher=teacher, teacher_logits=teacher_transfer, alpha=0.9, temperature=2.0,
                             options={"hidden": 150, "embedding_dim": 64, "embeddings_from": "minilm"})
        timings["bilstm_train_s"] = time.perf_counter() - t0
        rows.append(measure("BiLSTM (KD)", lstm, dev, test, teacher_dev, teacher_test, out, args.threads)[0])
        timed.append((rows[-1], lstm))
    t0 = time.perf_counter()
    stage("latency")
    measure_latency(timed, args.threads)
    timings["latency_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    result = {
        "command": "python benchmarks/sst2.py " + " ".join(argv or sys.argv[1:]),
        "device": f"CPU: {args.threads} threads on a shared 2-core machine ({cpu_name()})",
        "torch": torch.__version__,
        "schedule": {"teacher_train": args.teacher_train, "half_train": args.half_train,
                     "half_epochs": args.half_epochs, "stages": args.stages,
                     "transfer": args.transfer, "tiny_epochs": args.tiny_epochs,
                     "tiny_layers": args.tiny_layers, "seeds": args.seeds,
                     "max_length": MAX_LENGTH},
        "rows": rows, "tiny": tiny_rows, "timings": timings,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    table = render(result)
    print(table)
    if args.docs:
        atomic_write_text(Path(args.docs), table)
    return 0


def latency_only(out: Path, threads: int) -> int:
    """Interleaved latency of the saved models (and the BiLSTM's scores), written to latency.json."""
    from kdistill.experiment import load_model

    torch.set_num_threads(threads)
    dev = load_dataset("sst2", max_length=MAX_LENGTH, test_split="dev")
    test = load_dataset("sst2", max_length=MAX_LENGTH, test_split="test")
    names = {"teacher": "teacher", "half-depth": "half", "tiny KD": "tiny-kd-0",
             "tiny no-KD": "tiny-plain-0", "BiLSTM (KD)": "bilstm-kd"}
    names = {n: f for n, f in names.items() if (out / f / "best.safetensors").exists()}  # skipped stages
    models = {name: load_model(out / folder / "best.safetensors")[0] for name, folder in names.items()}
    rows = {name: {"model": name} for name in names}
    if "BiLSTM (KD)" in models:
        teacher_dev = predict_by_length(models["teacher"], dev.x_test)
        lstm_dev = predict_by_length(models["BiLSTM (KD)"], dev.x_test)
        lstm_test = predict_by_length(models["BiLSTM (KD)"], test.x_test)
        rows["BiLSTM (KD)"].update(
            params=parameter_count(models["BiLSTM (KD)"]), size_bytes=size_on_disk(models["BiLSTM (KD)"]),
            dev_acc=accuracy(lstm_dev, dev.y_test), test_acc=accuracy(lstm_test, test.y_test),
            agreement_dev=top1_agreement(student_logits=lstm_dev, teacher_logits=teacher_dev), kl_dev=predictive_kl(teacher_logits=teacher_dev, student_logits=lstm_dev))
    for name, model in models.items():
        rows[name]["onnx_path"] = str(export_onnx(model, out / "onnx" / f"{slug(name)}.onnx", MAX_LENGTH))
    stage("latency")
    measure_latency([(rows[n], models[n]) for n in names], threads, rounds=3)
    result = {"command": "python benchmarks/sst2.py --latency-only --out " + str(out),
              "device": f"CPU: {threads} threads on a shared 2-core machine ({cpu_name()})",
              "rows": list(rows.values())}
    atomic_write_text(out / "latency.json", json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


def stage(name: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)


def save_partial(out: Path, rows: list[dict[str, Any]], timings: dict[str, float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "partial.json", json.dumps({"rows": rows, "timings": timings}, indent=2))


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(values) if values else None


def _std(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def render(result: dict[str, Any]) -> str:
    """The Markdown results table with ratios to the teacher."""
    rows = list(result["rows"])
    for label, group in (("tiny (tiny-transformer, KD)", result["tiny"]["kd"]),
                         ("tiny (tiny-transformer, no KD)", result["tiny"]["no-kd"])):
        if group:
            numeric = [k for k, v in group[0].items() if isinstance(v, int | float) or v is None]
            mean = {k: _mean(group, k) for k in numeric}
            mean["model"] = f"{label}, mean of {len(group)}"
            mean["dev_std"] = _std(group, "dev_acc")
            at = len(rows) - 1 if rows[-1]["model"].startswith("BiLSTM") else len(rows)
            rows.insert(at, mean)
    teacher = rows[0]
    lines = [
        "| model | params | size | dev acc | test acc | agree (dev) | KL (dev) | torch ms | ORT ms "
        "| acc kept | speed-up torch | speed-up ORT | size ÷ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        return "–" if r.get(key) is None else format(r[key], fmt)

    for r in rows:
        def f(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            return cell(r, key, fmt)

        dev_acc = f("dev_acc", ".2%") + (f" ± {r['dev_std']:.2%}" if r.get("dev_std") else "")
        kept = r["dev_acc"] / teacher["dev_acc"]
        up_t = teacher["torch_ms"] / r["torch_ms"]
        up_o = (teacher["onnx_ms"] / r["onnx_ms"]) if r.get("onnx_ms") and teacher.get("onnx_ms") else None
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['size_bytes'] / 2**20:.1f} MiB | {dev_acc} "
            f"| {f('test_acc', '.2%')} | {f('agreement_dev', '.2%')} | {f('kl_dev', '.3f')} "
            f"| {f('torch_ms', '.1f')} | {f('onnx_ms', '.1f')} | {kept:.1%} | {up_t:.2f}× "
            f"| {'–' if up_o is None else f'{up_o:.2f}×'} | {teacher['size_bytes'] / r['size_bytes']:.1f} |")
    head = [
        f"Command: `{result['command']}`",
        f"Device: {result['device']}; torch {result['torch']}",
        f"Schedule: {json.dumps(result['schedule'])}",
        f"Wall-clock seconds: {json.dumps({k: round(v) for k, v in result['timings'].items()})}",
        "",
    ]
    return "\n".join(head + lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
