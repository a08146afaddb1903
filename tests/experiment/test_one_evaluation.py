"""A run's metrics.json and `kdistill evaluate` on its saved best checkpoint are one evaluation:
the same keys and the same values (CPU latency aside, which is measured anew each time).

Evaluation reloads the whole test split (docs/EVALUATE.md), so these runs set no ``limit_test``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kdistill.cli.main import main

SCHEDULE = {"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu", "progress": False}


def measured(metrics: dict) -> dict:
    """The metrics that depend on the model and the data alone (not on the machine's load)."""
    return {k: v for k, v in metrics.items() if not k.startswith("latency")}


def evaluate_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def write(folder: Path, config: dict) -> str:
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_distilled_classifier_reports_what_evaluate_reports(tmp_path, capsys):
    cfg = write(tmp_path, {"data": {"dataset": "digits", "limit_train": 200},
                           "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple",
                                                                           "options": {"hidden": [16]}},
                           "train": SCHEDULE})
    out = tmp_path / "run"
    assert main(["distill", cfg, "-o", str(out)]) == 0
    recorded = json.loads((out / "student" / "metrics.json").read_text())
    assert {"accuracy", "top5_accuracy", "agreement", "kl"} <= recorded.keys()
    again = evaluate_json(capsys, str(out / "student" / "best.safetensors"),
                          "--teacher", str(out / "teacher" / "best.safetensors"))
    assert measured(again) == measured(recorded)


def test_a_regressor_reports_its_baseline_in_both(tmp_path, capsys):
    cfg = write(tmp_path, {"data": {"dataset": "diabetes"}, "student": {"model": "mlp-simple"},
                           "train": SCHEDULE})
    out = tmp_path / "run"
    assert main(["train", cfg, "--role", "student", "-o", str(out)]) == 0
    recorded = json.loads((out / "student" / "metrics.json").read_text())
    assert {"mse", "mse_predict_mean", "r2_vs_mean"} <= recorded.keys()
    again = evaluate_json(capsys, str(out / "student" / "best.safetensors"))
    assert measured(again).keys() == measured(recorded).keys()
    for key, value in measured(recorded).items():  # the same weights, reloaded: equal up to float rounding
        assert again[key] == pytest.approx(value, rel=1e-5), key
