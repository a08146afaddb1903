"""Every example config validates, names registered methods, and runs end to end on a tiny budget."""

import json
from pathlib import Path

import pytest

from kdistill.config import load_config
from kdistill.detection.objective import detection_terms
from kdistill.distiller import build_method
from kdistill.registry import METHODS
from kdistill.schemes import run_experiment, scheme_names, validate_options

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "methods").glob("*.yaml"))
FAST = ["data.limit_train=120", "data.limit_test=40", "train.epochs=1", "train.progress=false",
        "teacher_train.epochs=1", "teacher.model=cnn-simple", "teacher.options={widths: [4, 8, 16]}"]


def test_there_is_an_example_for_every_method_and_scheme():
    names = {p.stem for p in EXAMPLES}
    # the transformer methods are shown in the SST-2 examples at the top of examples/
    for path in (ROOT / "examples").glob("sst2-*.yaml"):
        names |= {m.name for m in load_config(path).distill.methods}
    # the label term is spelt out in an example that lists its whole loss
    for path in EXAMPLES:
        names |= {m.name for m in load_config(path).distill.terms or []}
    # the detector's own box term is in every detection example's resolved loss
    for path in EXAMPLES:
        cfg = load_config(path)
        if cfg.data.dataset.startswith("canvas-"):
            names |= {t.name for t in detection_terms(cfg)}
    assert set(METHODS.names()) <= names
    assert set(scheme_names()) - {"transfer"} <= names
    assert {"transfer-munge", "transfer-dataset"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates(path):
    cfg = load_config(path)
    for m in cfg.distill.method_list() + (cfg.distill.terms or []):
        assert m.name in METHODS
        build_method(m.name, m.options, cfg.distill.temperature)
    if cfg.distill.scheme:
        validate_options(cfg.distill.scheme.name, cfg.distill.scheme.options)


def _fast_overrides(path):
    overrides = list(FAST)
    stem = path.stem
    if stem in {"born-again", "noisy-student"}:  # these need student >= teacher
        overrides += ["student.model=cnn-simple", "student.options={widths: [4, 8, 16]}"]
    else:
        overrides += ["student.model=cnn-simple", "student.options={widths: [2, 4]}"]
    if stem == "born-again":
        overrides.append("distill.scheme.options.generations=2")
    if stem == "noisy-student":
        overrides.append("distill.scheme.options.rounds=1")
    if stem == "multi-teacher":
        overrides.append("distill.scheme.options.teachers=[{model: cnn-simple, options: {widths: [4, 8]}}, "
                         "{model: mlp-simple}]")
    if stem == "takd":
        overrides.append("distill.scheme.options.assistants=[{model: cnn-simple, options: {widths: [3, 6]}}]")
    if stem == "fitnets":  # its hint-only stage must end before the run does
        overrides.append("train.epochs=4")
    if stem == "early-stop":
        overrides += ["teacher_train.epochs=2", "distill.scheme.options.teacher_epoch=0"]
    if stem == "dml":
        overrides.append("distill.scheme.options.peers=[{model: cnn-simple, options: {widths: [2, 4]}}]")
    if stem == "transfer-munge":
        overrides.append("distill.scheme.options.multiplier=1")
    return overrides


# the detection methods' examples train detectors; tests/detection runs them with detector-sized overrides
DETECTION = {"crosskd", "pred-mimic", "feat-imitation"}


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem not in {"regression", "transfer-dataset"} | DETECTION],
                         ids=lambda p: p.stem)
def test_example_runs_end_to_end(path, tmp_path):
    cfg = load_config(path, _fast_overrides(path) + [f"output_dir={tmp_path}"])
    result = run_experiment(cfg)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    assert result.checkpoint is not None and Path(result.checkpoint).exists()


def test_regression_example_beats_predicting_the_mean(tmp_path):
    # the shipped diabetes example, shortened: standardised targets make even 25 epochs learn
    cfg = load_config(ROOT / "examples/methods/regression.yaml",
                      ["train.epochs=25", "teacher_train.epochs=25", "train.progress=false",
                       "teacher_train.progress=false", f"output_dir={tmp_path / 'out'}"])
    result = run_experiment(cfg)
    assert result.metrics["mse"] < result.metrics["mse_predict_mean"]
    assert result.metrics["r2_vs_mean"] > 0.1 and "teacher_mse" in result.metrics


@pytest.mark.parametrize("include_train", [True, False])
def test_transfer_dataset_example(include_train, tmp_path, idx_dir, caplog):
    for name in ("mnist", "fashion-mnist"):  # skip unless the run below can find both without downloading
        idx_dir(name)
    path = ROOT / "examples/methods/transfer-dataset.yaml"
    cfg = load_config(path, _fast_overrides(path) + ["data.download=false",
                                                     "distill.scheme.options.limit=200",
                                                     f"distill.scheme.options.include_train={include_train}",
                                                     f"output_dir={tmp_path}"])
    with caplog.at_level("WARNING", logger="kdistill"):
        result = run_experiment(cfg)
    assert (tmp_path / "scheme.json").exists() and 0.0 <= result.metrics["accuracy"] <= 1.0
    summary = json.loads((tmp_path / "scheme.json").read_text())
    # the other set's 200 images, plus the training images when asked for
    assert (summary["size"] > 200) is include_train
    # a transfer set of the other data set's images alone is legal but warned about
    assert ("include_train: true" in caplog.text) is not include_train


@pytest.mark.parametrize("method, produced", [("crd", "student/best.safetensors"),
                                              ("born-again", "gen-2/student/best.safetensors")])
def test_cli_method_flag_selects_methods_and_schemes(method, produced, tmp_path):
    from kdistill.cli.main import main

    path = ROOT / "examples/methods/kd.yaml"
    sets = [arg for o in _fast_overrides(path) for arg in ("--set", o)]
    if method == "born-again":
        sets += ["--set", "distill.scheme.options.generations=2"]
    code = main(["distill", str(path), "--method", method, "--no-progress", "-o", str(tmp_path), *sets])
    assert code == 0
    assert (tmp_path / produced).exists()


def test_cli_unknown_method_is_a_user_error(tmp_path, capsys):
    from kdistill.cli.main import main

    code = main(["distill", str(ROOT / "examples/methods/kd.yaml"), "--method", "crdd", "--set",
                 "data.limit_train=50", "-o", str(tmp_path), "--no-progress", "--set", "teacher.model=mlp-simple"])
    assert code == 2
    assert "crd" in capsys.readouterr().err


def test_cli_conv_map_method_on_an_mlp_student_is_a_user_error(tmp_path, capsys):
    from kdistill.cli.main import main

    sets = [arg for o in FAST + ["student.model=mlp-simple"] for arg in ("--set", o)]
    code = main(["distill", str(ROOT / "examples/methods/nst.yaml"), "--no-progress", "-o", str(tmp_path), *sets])
    assert code == 2
    err = capsys.readouterr().err
    assert "conv feature maps" in err and "student_layer" in err and "Traceback" not in err
