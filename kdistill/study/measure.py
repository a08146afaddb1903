"""Everything the study measures for one model, and the append-only results log.

Latency is the median of ``repeats`` forward passes after ``warmup`` passes,
on random inputs, with the thread count fixed (``measure.threads``, default 1,
so numbers are reproducible on a shared machine and comparable between
PyTorch and ONNX Runtime). Batch 1 gives the latency a single request sees;
the largest batch gives throughput in samples per second.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdistill.compress.export import ort_session
from kdistill.eval import (
    accuracy,
    cpu_latency,
    error_count,
    latency_summary,
    predict,
    predictive_kl,
    time_calls,
    top1_agreement,
)
from kdistill.study.config import MeasureConfig
from kdistill.train.checkpoint import atomic_write_text, ensure_writable_dir

COLUMNS = [
    "run", "technique", "model", "family", "source", "setting", "status", "note",
    "accuracy", "errors", "n_test", "params", "nonzero_params", "size_bytes", "artifact",
    "torch_ms_b1", "torch_samples_per_s", "ort_ms_b1", "ort_samples_per_s", "latency_batch",
    "reference", "agreement", "kl", "train_seconds",
]


def ort_latency(session: Any, input_shape: Sequence[int], batch_size: int,
                warmup: int, repeats: int) -> dict[str, float]:
    """Median time of one ONNX Runtime run, timed like :func:`kdistill.eval.cpu_latency` for PyTorch."""
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape)).astype(np.float32)
    return latency_summary(time_calls(lambda: session.run(None, {"input": x}), warmup, repeats), batch_size)


def measure_model(
    model: nn.Module,
    data: Any,
    cfg: MeasureConfig,
    *,
    artifact: Path,
    params: int,
    reference_logits: Tensor | None,
    onnx_model: bytes | None = None,
) -> dict[str, Any]:
    """Accuracy, size of ``artifact`` on disk, PyTorch/ORT latency, fidelity to the reference."""
    model.eval()
    logits = predict(model, data.x_test)
    row: dict[str, Any] = {
        "accuracy": accuracy(logits, data.y_test), "errors": error_count(logits, data.y_test),
        "n_test": len(data.y_test), "params": params,
        "nonzero_params": sum(int((p != 0).sum()) for p in model.parameters()) or params,
        "size_bytes": os.path.getsize(artifact), "artifact": str(artifact),
    }
    small, large = min(cfg.batch_sizes), max(cfg.batch_sizes)
    row["latency_batch"] = large
    if not getattr(model, "runs_in_onnxruntime", False):  # int8 models have only ORT columns
        row["torch_ms_b1"] = cpu_latency(model, data.input_shape, small, cfg.warmup, cfg.repeats,
                                         threads=cfg.threads)["ms_per_sample"]
        row["torch_samples_per_s"] = cpu_latency(model, data.input_shape, large, min(cfg.warmup, 1),
                                                 max(2, cfg.repeats // 4), threads=cfg.threads)["samples_per_s"]
    if onnx_model is not None:

        session = ort_session(onnx_model, threads=cfg.threads)
        row["ort_ms_b1"] = ort_latency(session, data.input_shape, small, cfg.warmup,
                                       cfg.repeats)["ms_per_sample"]
        row["ort_samples_per_s"] = ort_latency(session, data.input_shape, large, min(cfg.warmup, 1),
                                               max(2, cfg.repeats // 4))["samples_per_s"]
    if reference_logits is not None:
        row["agreement"] = top1_agreement(student_logits=logits, teacher_logits=reference_logits)
        row["kl"] = predictive_kl(teacher_logits=reference_logits, student_logits=logits)
    return row


class ResultsLog:
    """``results.jsonl``: one JSON line per finished run, appended and fsynced as it ends.

    ``results.json`` and ``results.csv`` are rewritten atomically after every
    run, so a crash loses at most the run in progress, and a resumed study
    skips every run already in the log.
    """

    def __init__(self, out_dir: Path, resume: bool = True) -> None:
        self.out = out_dir
        self.path = out_dir / "results.jsonl"
        self.rows: list[dict[str, Any]] = []
        ensure_writable_dir(out_dir, "study output folder")
        if resume and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a crash: that run is redone
            # rewrite without a torn last line before appending again
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        elif self.path.exists():
            self.path.unlink()

    def done(self, run: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["run"] == run), None)

    def append(self, row: dict[str, Any]) -> None:
        row = {k: row.get(k) for k in COLUMNS}
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.write_tables()

    def write_tables(self) -> None:
        atomic_write_text(self.out / "results.json", json.dumps({"rows": self.rows}, indent=2))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.out / "results.csv", buffer.getvalue())


def torch_threads(n: int) -> int:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old
