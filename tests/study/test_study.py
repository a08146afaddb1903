"""The compression study end to end on a tiny schedule, its report, and resuming."""

import html
import json
import os

import pytest

from kdistill.errors import ConfigError
from kdistill.study import runner
from kdistill.study.config import StudyConfig, load_study_config
from kdistill.study.plots import PLOTS
from kdistill.study.runner import distill_pairs, run_study, select

TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "limit_train": 300, "limit_test": 120},
    "models": ["mlp-simple", "mlp-medium", "cnn-simple"],
    "train": {"epochs": 1, "batch_size": 64, "progress": False},
    "distill": {"alpha": 0.9, "temperature": 4.0},
    "prune": {"sparsities": [0.5], "structured": [0.5], "finetune_epochs": 1},
    "quantize": {"calibration_samples": 32},
    "measure": {"batch_sizes": [1, 8], "repeats": 1, "warmup": 0},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return run_study(StudyConfig.model_validate(TINY), out), out


def test_every_run_is_measured_from_its_file(study):
    result, out = study
    runs = {r["run"] for r in result.rows}
    for model in TINY["models"]:
        for prefix in ("baseline", "dynamic-int8", "static-int8", "prune-unstructured-0.5",
                       "prune-structured-0.5"):
            assert f"{prefix}/{model}" in runs
    # every smaller model under every larger one: mlp-simple < cnn-simple < mlp-medium on 8x8 digits
    pairs = {r for r in runs if r.startswith("distilled/")}
    assert pairs == {"distilled/mlp-medium->cnn-simple", "distilled/mlp-medium->mlp-simple",
                     "distilled/cnn-simple->mlp-simple"}
    assert "distilled+dynamic-int8/mlp-medium->cnn-simple" in runs
    for row in result.rows:
        assert row["status"] == "ok", row
        assert 0 <= row["accuracy"] <= 1
        assert row["size_bytes"] == os.path.getsize(row["artifact"])
        assert row["agreement"] is not None and row["kl"] >= 0
        assert row["ort_ms_b1"] > 0 and row["ort_samples_per_s"] > 0
        if "int8" in row["technique"]:  # int8 models run in ONNX Runtime only
            assert row["torch_ms_b1"] is None and row["torch_samples_per_s"] is None
        else:
            assert row["torch_ms_b1"] > 0 and row["torch_samples_per_s"] > 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(result.rows) == len(json.loads((out / "results.json").read_text())["rows"])
    assert len((out / "results.csv").read_text().splitlines()) == len(result.rows) + 1


def test_report_references_every_plot_and_row(study):
    result, out = study
    page = (out / "report.html").read_text()
    for file, (title, _) in PLOTS.items():
        assert (out / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"href='{file}'" in page and title in page
    assert page.count("data:image/png;base64,") == len(PLOTS)
    for row in result.rows:
        assert f"id='{html.escape(row['run'])}'" in page
    assert "Which technique when" in page and "Pareto front" in page


def test_resume_skips_finished_runs(study, monkeypatch):
    result, out = study
    rows = (out / "results.jsonl").read_text().splitlines()
    # drop the last finished run and cut the one before it mid-line, as a crash would
    dropped = json.loads(rows[-1])["run"]
    (out / "results.jsonl").write_text("\n".join(rows[:-2]) + "\n" + rows[-2][:20])
    torn = json.loads(rows[-2])["run"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished baseline was trained again")

    monkeypatch.setattr(runner, "train_model", no_training)
    again = run_study(StudyConfig.model_validate(TINY), out)
    assert [r["run"] for r in again.rows][-2:] == [torn, dropped]
    assert len(again.rows) == len(result.rows)


def test_selection_and_pairs():
    sizes = {"a-simple": 1, "a-deep": 10, "b-simple": 2, "b-deep": 20}
    assert select("largest-per-family", sizes) == ["a-deep", "b-deep"]
    assert select("smallest-per-family", sizes) == ["a-simple", "b-simple"]
    cfg = StudyConfig(models=list(sizes))
    pairs = distill_pairs(cfg, sizes)
    assert len(pairs) == 6 and all(sizes[s] < sizes[t] for t, s in pairs)
    with pytest.raises(ConfigError):
        select(["c-deep"], sizes)


def test_quick_schedule_and_config_errors(tmp_path):
    cfg = StudyConfig.model_validate(TINY).quick_version()
    assert cfg.train.epochs == cfg.quick.epochs and cfg.distill.train.epochs == cfg.quick.distill_epochs
    assert cfg.prune.sparsities == cfg.quick.sparsities and cfg.data.limit_train == cfg.quick.limit_train
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [mlp-simple]\nprune: {sparsitys: [0.5]}\n")
    with pytest.raises(ConfigError, match="sparsities"):
        load_study_config(bad)


def test_example_study_files_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("study-mnist.yaml", "study-fashion-mnist.yaml"):
        cfg = load_study_config(root / name)
        assert len(cfg.models) == 9


def test_every_distill_setting_reaches_the_pair_runs(tmp_path, monkeypatch):
    # cache and teacher_precision were dropped on the way to each pair's experiment
    cfg = StudyConfig.model_validate({
        **TINY, "models": ["mlp-simple", "mlp-medium"], "data": {"dataset": "digits", "limit_train": 120,
                                                                 "limit_test": 40},
        "distill": {"alpha": 0.5, "temperature": 2.0, "cache": "off", "teacher_precision": "bf16",
                    "methods": [{"name": "kd"}, {"name": "pkt", "weight": 2.0}]},
        "prune": {"sparsities": [], "structured": []}, "quantize": {"dynamic": False, "static": False},
        "measure": {"batch_sizes": [1], "repeats": 1, "warmup": 0, "onnx": False}})
    seen = []

    class Stop(Exception):
        pass

    def capture(exp, **kwargs):
        seen.append(exp.distill)
        raise Stop

    monkeypatch.setattr(runner, "run_distill", capture)
    with pytest.raises(Stop):
        run_study(cfg, tmp_path)
    d = seen[0]
    assert (d.alpha, d.temperature, d.cache, d.teacher_precision) == (0.5, 2.0, "off", "bf16")
    assert [(m.name, m.weight) for m in d.methods] == [("kd", 1.0), ("pkt", 2.0)]


def test_a_scheme_in_a_study_is_refused(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("models: [mlp-simple, mlp-medium]\ndistill: {scheme: {name: born-again}}\n")
    with pytest.raises(ConfigError, match="scheme 'born-again'"):
        load_study_config(path)


def test_quick_shortens_the_variational_schedule_too():
    cfg = StudyConfig.model_validate({**TINY, "variational": {"train": {"epochs": 30}}})
    quick = cfg.quick_version()
    assert quick.variational.train.epochs == cfg.quick.distill_epochs
    assert cfg.variational.train.epochs == 30  # the full schedule is untouched
