"""The main job: teacher, student alone, distilled student; one table and one plot.

``run_demo()`` trains a teacher, then for each seed trains the same student
twice, once on labels alone and once distilled from the teacher, and reports
the mean and spread of every measurement. Everything printed is measured in
this run.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdistill.config import ExperimentConfig, parse_config
from kdistill.errors import ConfigError
from kdistill.eval import predict, predictive_kl, top1_agreement
from kdistill.eval.measure import format_bytes
from kdistill.experiment import load_data, run_distill, seeded, train_model
from kdistill.train.checkpoint import atomic_write_bytes, atomic_write_text, ensure_writable_dir

# Schedules sized so the default (digits) finishes in well under two minutes on 2 CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "data": {"dataset": "digits"},
        "teacher": {"model": "cnn-deep"},
        "student": {"model": "mlp-medium"},
        "distill": {"alpha": 0.9, "temperature": 4.0},
        "teacher_train": {"epochs": 40, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3}},
        "train": {"epochs": 40, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3}},
    },
    "mnist": {
        "data": {"dataset": "mnist", "limit_train": 20000},
        "teacher": {"model": "cnn-medium"},
        "student": {"model": "mlp-simple"},
        # the 25k-parameter MLP loses to itself alone at T = 4, alpha = 0.9 (docs/DEMO.md, docs/METHODS.md)
        "distill": {"alpha": 0.5, "temperature": 2.0},
        "teacher_train": {"epochs": 4, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 2e-3}},
        "train": {"epochs": 8, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 2e-3}},
    },
}
# Fashion-MNIST is harder: a longer teacher and student schedule (at T = 4, alpha = 0.9 its small MLP
# student also lost 1-2 points to the same MLP trained alone).
PRESETS["fashion-mnist"] = {
    **PRESETS["mnist"],
    "data": {"dataset": "fashion-mnist", "limit_train": 20000},
    "teacher_train": {**PRESETS["mnist"]["teacher_train"], "epochs": 8},
    "train": {**PRESETS["mnist"]["train"], "epochs": 20},
}


@dataclass
class DemoResult:
    rows: list[dict[str, Any]]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


def demo_config(dataset: str = "digits", **overrides: Any) -> ExperimentConfig:
    if dataset not in PRESETS:
        raise ConfigError(f"The demo knows the data sets {', '.join(PRESETS)}; got '{dataset}'.")
    raw = json.loads(json.dumps(PRESETS[dataset]))
    raw["name"] = f"demo-{dataset}"
    for key, value in overrides.items():
        if value is not None:
            section, _, leaf = key.partition(".")
            raw.setdefault(section, {})[leaf] = value
    return parse_config(raw, source=f"demo preset '{dataset}'")


def _summarise(role: str, model_name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["accuracy"] for r in runs]
    row: dict[str, Any] = {
        "role": role, "model": model_name, "seeds": len(runs),
        "accuracy": statistics.fmean(accs),
        "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "errors": statistics.fmean(r["errors"] for r in runs),
        "n_test": runs[0]["n_test"], "params": runs[0]["params"], "size_bytes": runs[0]["size_bytes"],
        "latency_ms": statistics.median(r["latency_ms"] for r in runs),
    }
    for key in ("agreement", "kl"):
        if runs[0].get(key) is not None:
            row[key] = statistics.fmean(r[key] for r in runs)
    return row


def run_demo(
    dataset: str = "digits",
    seeds: int = 5,
    out_dir: str | Path = "kdistill-out/demo",
    *,
    data_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> DemoResult:
    """Train teacher, student alone and distilled student; write table and plot to ``out_dir``."""
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1.")
    out = Path(out_dir)
    cfg = demo_config(dataset, **{"data.data_dir": data_dir, "train.device": device,
                                  "teacher_train.device": device, "train.progress": progress,
                                  "teacher_train.progress": progress, "output_dir": None})
    data = load_data(cfg, whole_for="The demo")
    teacher_run = train_model(cfg, "teacher", data=data, out_dir=out / "teacher")
    teacher = teacher_run.model
    teacher_logits = predict(teacher, data.x_test)
    alone, distilled = [], []
    for seed in range(seeds):
        cfg_s = seeded(cfg, seed)
        solo = train_model(cfg_s, "student", data=data, out_dir=out / f"student-alone-seed{seed}")
        logits = predict(solo.model, data.x_test)
        alone.append(dict(solo.metrics, agreement=top1_agreement(student_logits=logits, teacher_logits=teacher_logits),
                          kl=predictive_kl(teacher_logits=teacher_logits, student_logits=logits)))
        run = run_distill(cfg_s, data=data, teacher=teacher, out_dir=out / f"distilled-seed{seed}")
        distilled.append(run.metrics)
    rows = [
        _summarise("teacher", cfg.teacher.model, [teacher_run.metrics]),
        _summarise("student alone", cfg.student.model, alone),
        _summarise("distilled student", cfg.student.model, distilled),
    ]
    result = DemoResult(rows=rows, out_dir=out)
    result.files = write_outputs(rows, out, title=f"kdistill demo on {dataset} ({seeds} seeds)")
    return result


COLUMNS = ["role", "model", "seeds", "accuracy", "accuracy_std", "errors", "n_test", "params",
           "size_bytes", "latency_ms", "agreement", "kl"]


def write_outputs(rows: list[dict[str, Any]], out: Path, title: str) -> dict[str, Path]:
    """results.json, results.csv, results.md and accuracy_vs_size.png, each written atomically."""
    ensure_writable_dir(out, "demo output folder")
    files = {"json": out / "results.json", "csv": out / "results.csv", "markdown": out / "results.md",
             "plot": out / "accuracy_vs_size.png"}
    atomic_write_text(files["json"], json.dumps({"title": title, "rows": rows}, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(files["csv"], buffer.getvalue())
    atomic_write_text(files["markdown"], markdown_table(rows, title))
    atomic_write_bytes(files["plot"], accuracy_vs_size_png(rows, title))
    return files


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:

    lines = [f"# {title}", "",
             "| model | role | accuracy | errors | params | size | latency (ms/sample) | agreement | KL |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{100 * r['accuracy']:.2f}% ± {100 * r['accuracy_std']:.2f}"
        agree = f"{100 * r['agreement']:.2f}%" if r.get("agreement") is not None else "-"
        kl = f"{r['kl']:.4f}" if r.get("kl") is not None else "-"
        lines.append(f"| {r['model']} | {r['role']} | {acc} | {r['errors']:.1f} / {r['n_test']} | "
                     f"{r['params']:,} | {format_bytes(r['size_bytes'])} | {r['latency_ms']:.3f} | {agree} | {kl} |")
    return "\n".join(lines) + "\n"


def accuracy_vs_size_png(rows: list[dict[str, Any]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    markers = {"teacher": "s", "student alone": "o", "distilled student": "*"}
    for r in rows:
        ax.errorbar(r["size_bytes"], 100 * r["accuracy"], yerr=100 * r["accuracy_std"],
                    marker=markers.get(r["role"], "o"), markersize=11, capsize=4, linestyle="none",
                    label=f"{r['role']} ({r['model']})")
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
