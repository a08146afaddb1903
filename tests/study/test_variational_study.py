"""The study's variational family on a tiny schedule: rows, files, the plot, the findings, resuming."""

import json
import os

import pytest

from kdistill.compress.artifact import read_artifact
from kdistill.errors import ConfigError
from kdistill.study import variational as family
from kdistill.study.config import StudyConfig, load_study_config
from kdistill.study.plots import accuracy_vs_nonzero
from kdistill.study.runner import run_study

TINY = {
    "name": "tiny-variational",
    "data": {"dataset": "digits", "limit_train": 300, "limit_test": 120},
    "models": ["mlp-simple", "mlp-medium"],
    "train": {"epochs": 2, "batch_size": 64, "progress": False},
    "distill": {"alpha": 0.9, "temperature": 4.0},
    "prune": {"sparsities": [0.5, 0.9], "structured": [], "finetune_epochs": 0},
    "quantize": {"dynamic": False, "static": False},
    "measure": {"batch_sizes": [1, 8], "repeats": 1, "warmup": 0, "onnx": False},
    "variational": {"thresholds": [3.0, 0.0], "anneal_epochs": 1},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("vstudy")
    return run_study(StudyConfig.model_validate(TINY), out), out


def test_family_rows_are_measured_from_sparse_files(study):
    result, _ = study
    rows = {r["run"]: r for r in result.rows}
    strict, loose = rows["variational-0/mlp-medium->mlp-simple"], rows["variational-3/mlp-medium->mlp-simple"]
    for row in (strict, loose):
        assert row["status"] == "ok" and row["technique"] == "variational"
        assert row["model"] == "mlp-simple" and row["source"] == row["reference"] == "mlp-medium"
        assert row["size_bytes"] == os.path.getsize(row["artifact"])
        assert read_artifact(row["artifact"])[1]["format"] == "sparse-bitmask"
        assert 0 < row["nonzero_params"] <= row["params"]
    # a lower threshold prunes every weight the higher one prunes, and more
    assert strict["nonzero_params"] < loose["nonzero_params"]
    assert strict["setting"] == "log alpha < 0"
    assert "distilled/mlp-medium->mlp-simple" in rows  # the dense peer it is compared with


def test_plot_and_report(study):
    result, out = study
    assert (out / "accuracy_vs_nonzero.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "Variational student <b>mlp-simple</b> from mlp-medium" in page
    assert "the dense distilled student" in page and "best pruned model" in page
    assert "variational-3/mlp-medium-&gt;mlp-simple" in page  # the table row
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert sum(line.startswith("variational-") for line in csv_lines) == 2
    assert sum(r["run"].startswith("variational-") for r in json.loads((out / "results.json").read_text())["rows"]) == 2
    assert accuracy_vs_nonzero([])[:8] == b"\x89PNG\r\n\x1a\n"  # an empty study still draws


def test_resume_reuses_the_trained_student(study, monkeypatch):
    result, out = study
    lines = (out / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if not json.loads(line)["run"].startswith("variational-0/")]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished variational student was trained again")

    monkeypatch.setattr(family, "run_distill", no_training)
    again = run_study(StudyConfig.model_validate(TINY), out)
    before = next(r for r in result.rows if r["run"] == "variational-0/mlp-medium->mlp-simple")
    redone = next(r for r in again.rows if r["run"] == "variational-0/mlp-medium->mlp-simple")
    assert redone["nonzero_params"] == before["nonzero_params"]
    assert redone["accuracy"] == before["accuracy"]


def test_family_is_off_by_default_and_checks_thresholds(tmp_path):
    assert StudyConfig().variational is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [mlp-simple]\nvariational: {thresholds: [9]}\n")
    with pytest.raises(ConfigError, match="thresholds"):
        load_study_config(bad)


def test_example_study_file_is_valid():
    from pathlib import Path

    cfg = load_study_config(Path(__file__).resolve().parents[2] / "examples" / "variational-study-mnist.yaml")
    assert cfg.variational.thresholds == [1.0, 2.0, 3.0, 4.0, 5.0]
    quick = cfg.quick_version()
    assert quick.distill.train.epochs == cfg.quick.distill_epochs  # what the family trains for
