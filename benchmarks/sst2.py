"""SST-2 benchmark: a fine-tuned MiniLM teacher and its distilled students, on the CPU.

    nice -n 10 python benchmarks/sst2.py --threads 1 --out ~/kdistill-bench/sst2 \\
        --runs tiny-kd-e4-s0,tiny-nokd-e4-s0 --write docs/NLP.md
    python benchmarks/sst2.py --quick --out /tmp/sst2-quick      # a smoke run of every step (minutes)

Every run is resumable and recorded on its own. A run's checkpoints go to ``--out/NAME``
(``last.safetensors`` every epoch, so a killed run continues from its last finished epoch when
the benchmark is started again); a finished run writes ``--records/NAME.json`` (committed under
``docs/benchmarks/sst2``) and is read back, never trained again, when the benchmark runs again.
``--write`` rebuilds the results table of ``docs/NLP.md`` from the records.

The data: SST-2's 67,349 training phrases are split once (a fixed seed) into ``--validation``
phrases held out from every training run, used to choose between configurations and epochs
(``best.safetensors`` is the epoch with the highest validation accuracy), and the rest, of which
the teacher is fine-tuned on the first ``--teacher-train`` and the students learn from
``--transfer`` (all by default) labelled by the teacher. Dev (872 sentences) and test (1,821) are
only ever evaluated, never used for a choice.

Runs (``--runs``, a comma list; the teacher always runs first):

* ``teacher``: all-MiniLM-L6-v2 + a classification head (``hf-classifier``), 1 epoch.
* ``CONFIG-sSEED`` for a student configuration of :data:`CONFIGS`, e.g. ``tiny-kd-e4-s0``:
  the 2-layer ``tiny-transformer`` (1.39M parameters) distilled with soft targets for 4 epochs,
  seed 0. Configurations vary epochs, distillation, the transfer set (TinyBERT-style augmented
  copies) and an intermediate-layer (hidden-state) loss; ``half-*`` is the half-depth
  ``hf-distil`` student and ``bilstm-*`` Tang et al. (2019)'s BiLSTM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from _common import write_section
from hinton_mnist import EpochClock, environment
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from kdistill.compress.load import load_model
from kdistill.config import ModelConfig, OptimizerConfig, SchedulerConfig, TrainConfig
from kdistill.data import DataSplits, load_dataset
from kdistill.distiller import Distiller, Supervised
from kdistill.errors import ConfigError
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
from kdistill.text.augment import augment_ids
from kdistill.text.deploy import export_onnx, onnx_latency
from kdistill.text.hf import load_tokenizer
from kdistill.text.inference import predict_by_length
from kdistill.train import fit, load_weights
from kdistill.train.checkpoint import atomic_write_text
from kdistill.train.lock import folder_lock
from kdistill.train.loop import split_validation

MAX_LENGTH = 64
SPLIT_SEED = 12345  # which training phrases are held out for validation: the same for every run
SECTION = ("<!-- sst2-records:start -->", "<!-- sst2-records:end -->")


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """One student configuration; a run is a configuration and a seed."""

    model: str = "tiny-transformer"
    epochs: int = 4
    lr: float = 1e-3
    batch: int = 64
    kd: bool = True  # False: labels only, the same model and schedule
    alpha: float = 0.9  # weight of the soft-target term (1 - alpha on the labels)
    temperature: float = 2.0
    hidden_weight: float = 0.0  # weight of the hidden-state (intermediate-layer) loss; 0 = off
    augment_copies: int = 0  # TinyBERT / Tang et al. augmented copies of the transfer set
    mask_prob: float = 0.1
    ngram_prob: float = 0.25
    transfer: int | None = None  # phrases of the transfer set; None = every non-validation phrase
    about: str = ""

    def options(self) -> dict[str, Any]:
        if self.model == "tiny-transformer":
            return {"layers": 2, "hidden": 128, "heads": 4, "embedding_dim": 32, "embeddings_from": "minilm"}
        if self.model == "bilstm":
            return {"hidden": 150, "embedding_dim": 64, "embeddings_from": "minilm"}
        return {}  # hf-distil: teacher layers 0, 2, 4 and head

    def hidden_method(self) -> HiddenStateMatching:
        if self.model == "hf-distil":  # DistilBERT: cosine, same width
            return HiddenStateMatching(layers={"teacher": [1, 3, 5], "student": [0, 1, 2]}, loss="cosine")
        # TinyBERT: mean squared error through a learned 128 -> 384 projection, every third teacher layer
        return HiddenStateMatching(layers={"teacher": [2, 5], "student": [0, 1]}, loss="mse")


CONFIGS: dict[str, StudentConfig] = {
    "tiny-kd-e2": StudentConfig(epochs=2, about="soft targets (alpha 0.9, T 2), 2 epochs"),
    "tiny-kd-e4": StudentConfig(epochs=4, about="soft targets (alpha 0.9, T 2), 4 epochs"),
    "tiny-kd-e8": StudentConfig(epochs=8, about="soft targets (alpha 0.9, T 2), 8 epochs"),
    "tiny-kd-a1-e4": StudentConfig(epochs=4, alpha=1.0, about="soft targets only (alpha 1, T 2), 4 epochs"),
    "tiny-nokd-e4": StudentConfig(epochs=4, kd=False, about="labels only, 4 epochs"),
    "tiny-kd-aug1-e2": StudentConfig(epochs=2, alpha=1.0, augment_copies=1,
                                     about="soft targets only, transfer set + 1 augmented copy, 2 epochs"),
    "tiny-kd-aug1-e4": StudentConfig(epochs=4, alpha=1.0, augment_copies=1,
                                     about="soft targets only, transfer set + 1 augmented copy, 4 epochs"),
    "tiny-kd-hidden-e2": StudentConfig(epochs=2, hidden_weight=1.0,
                                       about="soft targets + hidden-state MSE (teacher layers 3, 6), 2 epochs"),
    "half-kd-hidden-e2": StudentConfig(model="hf-distil", epochs=2, lr=5e-5, batch=32, alpha=0.5,
                                       hidden_weight=1.0, transfer=16_000,
                                       about="half-depth, soft targets + cosine hidden states, 2 epochs"),
    "bilstm-kd-e2": StudentConfig(model="bilstm", epochs=2, lr=2e-3, about="BiLSTM, soft targets, 2 epochs"),
}


def schedule(epochs: int, batch: int, lr: float, seed: int, val_fraction: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch, seed=seed, device="cpu", progress=False,
                       val_fraction=val_fraction, grad_clip=1.0,
                       optimizer=OptimizerConfig(name="adamw", lr=lr, weight_decay=0.01),
                       scheduler=SchedulerConfig(name="cosine", warmup_epochs=0.1 * epochs))


@dataclasses.dataclass
class Bench:
    """The data, the folders and the command, shared by every run of one invocation."""

    args: argparse.Namespace
    dev: DataSplits  # x_test: dev sentences
    test: DataSplits  # x_test: test sentences
    x_val: Tensor
    y_val: Tensor
    pool_x: Tensor  # every training phrase not held out, in a fixed random order
    pool_y: Tensor

    @property
    def out(self) -> Path:
        return Path(self.args.out).expanduser()

    @property
    def records(self) -> Path:
        return Path(self.args.records).expanduser()

    def command(self) -> str:
        return "python benchmarks/sst2.py " + " ".join(self.args.argv)

    def training_data(self, x: Tensor, y: Tensor, seed: int,
                      logits: Tensor | None = None) -> tuple[DataSplits, float, Tensor | None]:
        """``x``/``y`` plus the validation phrases, placed where fit()'s split takes its validation rows.

        fit() holds out ``val_fraction`` of the rows at a seeded random permutation's first positions;
        putting the held-out phrases exactly there makes fit() validate (and pick ``best``) on them
        and train on ``x`` alone, in its order. ``logits`` (the teacher's, one row per row of ``x``)
        come back laid out like the returned training set, for ``Distiller(teacher_outputs=...)``;
        the validation rows get NaN, which fit never reads (it trains on the other rows only).
        """
        n = len(x) + len(self.x_val)
        fraction = len(self.x_val) / n
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        xs, ys = torch.empty((n, *x.shape[1:]), dtype=x.dtype), torch.empty(n, dtype=y.dtype)
        xs[order[:len(self.x_val)]], ys[order[:len(self.x_val)]] = self.x_val, self.y_val
        xs[order[len(self.x_val):]], ys[order[len(self.x_val):]] = x, y
        kept, _, held, _ = split_validation(xs, ys, fraction, seed)
        if not (torch.equal(held, self.x_val) and torch.equal(kept, x)):
            raise RuntimeError("fit()'s validation split no longer matches the held-out phrases")
        aligned = None
        if logits is not None:
            aligned = torch.full((n, *logits.shape[1:]), float("nan"), dtype=logits.dtype)
            aligned[order[len(self.x_val):]] = logits
        return dataclasses.replace(self.dev, x_train=xs, y_train=ys), fraction, aligned


# --------------------------------------------------------------------------- data


def load_bench(args: argparse.Namespace) -> Bench:
    dev = load_dataset("sst2", max_length=MAX_LENGTH, test_split="dev")
    test = load_dataset("sst2", max_length=MAX_LENGTH, test_split="test")
    order = torch.randperm(len(dev.x_train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    if args.quick:  # a few hundred phrases and sentences: every step, in minutes
        order = order[: args.validation + max(args.teacher_train, args.transfer or 0)]
        dev, test = dev.subset(None, 64), test.subset(None, 64)
    held, pool = order[: args.validation], order[args.validation:]
    return Bench(args, dev, test, dev.x_train[held], dev.y_train[held], dev.x_train[pool], dev.y_train[pool])


def teacher_logits(bench: Bench, teacher: nn.Module, name: str, inputs: Tensor) -> Tensor:
    """The teacher's logits for ``inputs``, computed once and kept in ``--out/teacher-logits``."""
    path = bench.out / "teacher-logits" / f"{name}.safetensors"
    if path.exists():
        stored = load_file(path)
        if torch.equal(stored["inputs"], inputs):
            return stored["logits"]
    start = time.perf_counter()
    logits = predict_by_length(teacher, inputs)
    stage(f"teacher logits for {name}: {len(inputs):,} rows in {time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({"inputs": inputs.contiguous(), "logits": logits.contiguous()}, str(partial))
    os.replace(partial, path)
    return logits


def transfer_set(bench: Bench, cfg: StudentConfig, teacher: nn.Module | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Inputs, labels and (with a teacher) teacher logits of a configuration's transfer set."""
    n = cfg.transfer if cfg.transfer is not None else len(bench.pool_x)
    if bench.args.quick:
        n = min(n, bench.args.transfer or n)
    x, y = bench.pool_x[:n], bench.pool_y[:n]
    logits = teacher_logits(bench, teacher, f"transfer-{n}", x) if teacher is not None else None
    if cfg.augment_copies:
        tok = load_tokenizer(None)
        extra, source = augment_ids(x, pad_id=int(tok.pad_token_id), mask_id=tok.mask_token_id,
                                    copies=cfg.augment_copies, mask_prob=cfg.mask_prob,
                                    ngram_prob=cfg.ngram_prob, seed=0)
        x, y = torch.cat([x, extra]), torch.cat([y, y[source]])  # copied labels: alpha 1 ignores them
        if teacher is not None:
            name = f"transfer-{n}-aug{cfg.augment_copies}-m{cfg.mask_prob}-n{cfg.ngram_prob}"
            logits = torch.cat([logits, teacher_logits(bench, teacher, name, extra)])
    return x, y, logits


# --------------------------------------------------------------------------- one resumable run


def run_once(bench: Bench, name: str, settings: dict[str, Any], build,
             teacher_out: dict[str, Tensor] | None) -> tuple[dict[str, Any], nn.Module | None]:
    """Train, score and record run ``name`` (resuming its folder) unless it has a record.

    ``build()`` returns ``(objective, data, train_config, metadata)``; a recorded run is read back
    (its model only when ``--out`` still holds it) and must have been made with the same ``settings``.
    The run folder is locked meanwhile: a second process asked for the same run stops instead of
    writing the same checkpoints.
    """
    folder = bench.out / name
    try:
        with folder_lock(folder, "training"):
            return train_and_record(bench, name, settings, build, teacher_out)
    except ConfigError as error:
        raise SystemExit(f"Run '{name}': {error}") from None


def train_and_record(bench: Bench, name: str, settings: dict[str, Any], build,
                     teacher_out: dict[str, Tensor] | None) -> tuple[dict[str, Any], nn.Module | None]:
    record_path = bench.records / f"{name}.json"
    folder = bench.out / name
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("settings") != json.loads(json.dumps(settings)):
            raise SystemExit(
                f"Run '{name}' is recorded in {record_path} with other settings than this command's "
                f"({record.get('settings')} vs {settings}); remove the record to run it again, or use "
                "another --records folder.")
        best = folder / "best.safetensors"
        return record, (load_model(best)[0].eval() if best.exists() else None)
    objective, data, cfg, metadata = build()
    last = folder / "last.safetensors"
    stage(f"{'resuming' if last.exists() else 'starting'} {name}")
    clock = EpochClock(folder)
    history = fit(objective, data, cfg, out_dir=folder, resume=last if last.exists() else None,
                  cache_teacher=True, metadata=metadata, description=name, on_epoch_end=clock)
    model = objective.student
    load_weights(model, folder / "best.safetensors")
    wall, cpu = clock.totals()
    epochs = [{"epoch": int(e["epoch"]), "val_acc": e["val_score"], "loss": e["loss"]} for e in history.epochs]
    record = {
        "name": name,
        "settings": settings,
        "train": cfg.model_dump(mode="json", exclude={"progress", "device"}),
        "epochs_run": len(epochs),
        "best_epoch": history.best_epoch,
        "epochs": epochs,
        "val_acc": accuracy(predict_by_length(model, bench.x_val), bench.y_val),
        "val_size": len(bench.y_val),
        "train_rows": len(data.x_train) - len(bench.x_val),
        "params": parameter_count(model),
        "size_bytes": size_on_disk(model),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "command": bench.command(),
    }
    score(bench, record, model, teacher_out)
    return record, model


def score(bench: Bench, record: dict[str, Any], model: nn.Module, teacher_out: dict[str, Tensor] | None) -> None:
    """Dev and test accuracy, and agreement and KL with the teacher, into ``record``; then write it."""
    for split, data in (("dev", bench.dev), ("test", bench.test)):
        logits = predict_by_length(model, data.x_test)
        record[f"{split}_acc"] = accuracy(logits, data.y_test)
        record[f"{split}_size"] = len(data.y_test)
        if teacher_out is not None:
            record[f"agreement_{split}"] = top1_agreement(student_logits=logits, teacher_logits=teacher_out[split])
            record[f"kl_{split}"] = predictive_kl(teacher_logits=teacher_out[split], student_logits=logits)
    bench.records.mkdir(parents=True, exist_ok=True)
    atomic_write_text(bench.records / f"{record['name']}.json", json.dumps(record, indent=2) + "\n")
    stage(f"{record['name']}: validation {record['val_acc']:.2%}, dev {record['dev_acc']:.2%}, "
          f"test {record['test_acc']:.2%}")


def run_teacher(bench: Bench) -> tuple[dict[str, Any], nn.Module]:
    args = bench.args
    settings = {"model": "hf-classifier", "pretrained": "minilm", "teacher_train": args.teacher_train,
                "validation": args.validation, "split_seed": SPLIT_SEED, "quick": args.quick}

    def build():
        torch.manual_seed(0)  # the new head's initial weights
        teacher = create_model("hf-classifier", (MAX_LENGTH,), 2, pretrained="minilm")
        data, fraction, _ = bench.training_data(bench.pool_x[: args.teacher_train],
                                             bench.pool_y[: args.teacher_train], seed=0)
        meta = checkpoint_meta("hf-classifier", {"pretrained": "minilm"}, data, teacher)
        return Supervised(teacher), data, schedule(1, 32, 5e-5, 0, fraction), meta

    record, teacher = run_once(bench, "teacher", settings, build, None)
    if teacher is None:
        raise SystemExit(f"The teacher is recorded but {bench.out / 'teacher'} holds no checkpoint; "
                         "pass the --out it was trained in.")
    return record, teacher


def run_student(bench: Bench, name: str, teacher: nn.Module, teacher_out: dict[str, Tensor]) -> dict[str, Any]:
    config_name, seed = parse_run(name)
    cfg = CONFIGS[config_name]
    settings = {"config": config_name, "seed": seed, **dataclasses.asdict(cfg),
                "validation": bench.args.validation, "split_seed": SPLIT_SEED, "quick": bench.args.quick}
    if bench.args.quick:
        settings["epochs"] = 1

    def build():
        x, y, logits = transfer_set(bench, cfg, teacher if cfg.kd else None)
        data, fraction, aligned = bench.training_data(x, y, seed, logits)
        train = schedule(settings["epochs"], cfg.batch, cfg.lr, seed, fraction)
        torch.manual_seed(seed)
        options = cfg.options()
        if cfg.model == "hf-distil":
            student = create_model(cfg.model, (MAX_LENGTH,), 2, teacher_model=teacher)
        else:
            student = create_model(cfg.model, (MAX_LENGTH,), 2, **options)
        meta = checkpoint_meta(cfg.model, options, data, student)
        if not cfg.kd:
            return Supervised(student), data, train, meta
        methods = [(cfg.hidden_method(), cfg.hidden_weight)] if cfg.hidden_weight else []
        # the teacher's logits were computed once per transfer set: it never runs again, unless a
        # hidden-state term needs its layers (the Distiller then runs it, caching what it can)
        objective = Distiller(teacher=teacher, student=student, alpha=cfg.alpha, temperature=cfg.temperature,
                              methods=methods, teacher_outputs=None if methods else aligned)
        return objective, data, train, meta

    return run_once(bench, name, settings, build, teacher_out)[0]


def parse_run(name: str) -> tuple[str, int]:
    config, _, seed = name.rpartition("-s")
    if config not in CONFIGS or not seed.isdigit():
        raise SystemExit(f"Unknown run '{name}': a run is CONFIG-sSEED with CONFIG one of "
                         f"{', '.join(CONFIGS)} (e.g. tiny-kd-e4-s0).")
    return config, int(seed)


def checkpoint_meta(name: str, options: dict, data: DataSplits, model: nn.Module) -> dict[str, Any]:
    return {"role": name, "model_spec": model_spec(ModelConfig(model=name, options=options), data, model)}


# --------------------------------------------------------------------------- the table


def read_records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def render(records: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of every recorded run, with ratios to the teacher's dev accuracy."""
    teacher = records.get("teacher")
    if teacher is None:
        return "No recorded runs yet.\n"
    env = teacher["environment"]
    lines = [
        f"Device: {env['device']}; torch {env['torch']}. "
        f"Validation: {teacher['val_size']:,} training phrases held out from every run "
        f"(split seed {teacher['settings']['split_seed']}).",
        "",
        "| run | configuration | params | epochs (best) | validation acc | dev acc | dev ÷ teacher "
        "| test acc | agree (dev) | KL (dev) | train rows | wall s | CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = ["teacher"] + [n for n in records if n != "teacher"]
    for name in order:
        r = records[name]
        about = "MiniLM-L6 + head, fine-tuned" if name == "teacher" else r["settings"]["about"]
        agree = "–" if "agreement_dev" not in r else f"{r['agreement_dev']:.2%}"
        kl = "–" if "kl_dev" not in r else f"{r['kl_dev']:.3f}"
        lines.append(
            f"| {name} | {about} | {r['params'] / 1e6:.2f}M | {r['epochs_run']} ({r['best_epoch'] + 1}) "
            f"| {r['val_acc']:.2%} | {r['dev_acc']:.2%} | {r['dev_acc'] / teacher['dev_acc']:.1%} "
            f"| {r['test_acc']:.2%} | {agree} | {kl} | {r['train_rows']:,} | {r['wall_seconds']:,.0f} "
            f"| {r['cpu_seconds']:,.0f} |")
    commands = sorted({r["command"] for r in records.values()})
    lines += ["", "Commands (records in `docs/benchmarks/sst2/`):", ""] + [f"    {c}" for c in commands]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets, 1 epoch: checks every step in minutes")
    parser.add_argument("--runs", default="tiny-kd-e4-s0",
                        help="student runs after the teacher, in order (comma list of CONFIG-sSEED; "
                             f"configurations: {', '.join(CONFIGS)})")
    parser.add_argument("--teacher-train", type=int, default=16_000, help="phrases the teacher is fine-tuned on")
    parser.add_argument("--validation", type=int, default=4_000,
                        help="training phrases held out from every run, to choose configurations and epochs")
    parser.add_argument("--transfer", type=int, default=None, help="with --quick: phrases of the transfer set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="checkpoints and cached teacher logits (outside the repository)")
    parser.add_argument("--records", default=None,
                        help="run records (default docs/benchmarks/sst2, or OUT/records with --quick)")
    parser.add_argument("--write", default=None, help="rebuild the results table of this Markdown file (docs/NLP.md)")
    parser.add_argument("--latency-only", action="store_true",
                        help="re-measure latency of the recorded runs' checkpoints in OUT, into OUT/latency.json")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.records is None:
        args.records = str(Path(args.out).expanduser() / "records") if args.quick else "docs/benchmarks/sst2"
    if args.quick:
        args.teacher_train, args.validation, args.transfer = 64, 64, args.transfer or 128
    torch.set_num_threads(args.threads)
    runs = [r for r in args.runs.split(",") if r]
    for name in runs:
        parse_run(name)
    if args.latency_only:
        return latency_only(Path(args.out).expanduser(), Path(args.records), args.threads)

    bench = load_bench(args)
    stage("teacher")
    teacher_record, teacher = run_teacher(bench)
    teacher_out = {"dev": teacher_logits(bench, teacher, "dev", bench.dev.x_test),
                   "test": teacher_logits(bench, teacher, "test", bench.test.x_test)}
    for name in runs:
        run_student(bench, name, teacher, teacher_out)
        if args.write:
            write_doc(Path(args.write), bench.records)
    if args.write:
        write_doc(Path(args.write), bench.records)
    print(render(read_records(bench.records)))
    return 0


def write_doc(path: Path, records: Path) -> None:
    write_section(path, render(read_records(records)), *SECTION)


def latency_only(out: Path, records: Path, threads: int) -> int:
    """Batch 1, length 64, PyTorch and ONNX Runtime, of every recorded run whose checkpoint is in OUT:
    the minimum over 3 interleaved rounds of medians (other jobs on a shared machine only add time)."""
    models = {name: load_model(out / name / "best.safetensors")[0].eval()
              for name in read_records(records) if (out / name / "best.safetensors").exists()}
    rows = {name: {"model": name, "torch_ms": float("inf"), "onnx_ms": float("inf"),
                   "onnx_path": str(export_onnx(model, out / "onnx" / f"{name}.onnx", MAX_LENGTH))}
            for name, model in models.items()}
    stage("latency")
    for _ in range(3):
        for name, model in models.items():
            row = rows[name]
            ms = cpu_latency(model, (MAX_LENGTH,), batch_size=1, warmup=3, repeats=15, threads=threads)
            row["torch_ms"] = min(row["torch_ms"], ms["ms_per_sample"])
            row["onnx_ms"] = min(row["onnx_ms"], onnx_latency(row["onnx_path"], model.example_input(1, MAX_LENGTH),
                                                             warmup=5, repeats=30, threads=threads))
    result = {"command": f"python benchmarks/sst2.py --latency-only --threads {threads} --out {out}",
              "environment": environment(), "rows": list(rows.values())}
    atomic_write_text(out / "latency.json", json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


def stage(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
