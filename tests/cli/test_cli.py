"""User mistakes through the CLI: one paragraph on stderr, exit code 2, no traceback."""

import subprocess
import sys

import pytest
import torch

from kdistill.cli.main import main
from kdistill.distiller import Distiller
from kdistill.errors import ModelError
from kdistill.experiment import load_model
from kdistill.models import create_model


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdistill", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("kdistill: error:")
    for fragment in fragments:
        assert fragment in result.stderr.replace("\n  ", " ")


def test_bad_yaml_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("student: {model: mlp-simple}\ntrain: {epocs: 2}\n")
    assert_user_error(run_cli("train", str(cfg), "--role", "student"), "train.epocs", "epochs")


def test_missing_data_folder(tmp_path, monkeypatch):
    # the real data, wherever KDISTILL_DATA or the cache keep it, must not be found here
    monkeypatch.delenv("KDISTILL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = tmp_path / "mnist.yaml"
    cfg.write_text("data: {dataset: mnist, download: false}\nstudent: {model: mlp-simple}\n")
    result = run_cli("train", str(cfg), "--role", "student", "--data-dir", str(tmp_path / "nowhere"))
    assert_user_error(result, str(tmp_path / "nowhere"))


def test_teacher_student_shape_mismatch(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "data: {dataset: digits, limit_train: 200, limit_test: 50}\n"
        "teacher: {model: mlp-simple}\nstudent: {model: mlp-simple}\n"
        f"output_dir: {tmp_path / 'runs'}\ntrain: {{epochs: 1, progress: false}}\n")
    assert run_cli("train", str(cfg)).returncode == 0
    teacher_ckpt = tmp_path / "runs" / "teacher" / "best.safetensors"
    # a student configured for a different number of classes cannot be compared class by class
    teacher, _ = load_model(teacher_ckpt)
    with pytest.raises(ModelError, match="same number of classes"):
        Distiller(teacher=teacher, student=create_model("mlp-simple", (1, 8, 8), 5)).check_compatible(torch.zeros(2, 1, 8, 8))
    # and through the CLI: a teacher checkpoint trained for another class count
    cfg3 = tmp_path / "five.yaml"
    cfg3.write_text(
        "data: {dataset: csv, options: {path: " + str(_five_class_csv(tmp_path)) + "}}\n"
        f"teacher: {{model: mlp-simple, checkpoint: {teacher_ckpt}}}\n"
        "student: {model: mlp-simple}\ntrain: {epochs: 1, progress: false}\n"
        f"output_dir: {tmp_path / 'runs3'}\n")
    assert_user_error(run_cli("distill", str(cfg3)), "classes")


def _five_class_csv(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "five.csv"
    lines = ["label," + ",".join(f"f{i}" for i in range(64))]
    for i in range(60):
        lines.append(f"{i % 5}," + ",".join(f"{v:.3f}" for v in rng.normal(size=64)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_command_has_help(capsys):
    for command in ("train", "distill", "evaluate", "demo"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert "usage: kdistill" in capsys.readouterr().out


def test_train_distill_evaluate_end_to_end(tmp_path):
    cfg = tmp_path / "e2e.yaml"
    cfg.write_text(
        "data: {dataset: digits, limit_train: 300, limit_test: 100}\n"
        "teacher: {model: cnn-simple}\nstudent: {model: mlp-simple}\n"
        f"output_dir: {tmp_path / 'runs'}\ntrain: {{epochs: 2, progress: false}}\n")
    assert run_cli("distill", str(cfg)).returncode == 0
    student = tmp_path / "runs" / "student" / "best.safetensors"
    teacher = tmp_path / "runs" / "teacher" / "best.safetensors"
    assert student.exists() and teacher.exists()
    result = run_cli("evaluate", str(student), "--teacher", str(teacher), "--json")
    assert result.returncode == 0, result.stderr
    import json

    metrics = json.loads(result.stdout)
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["agreement"] <= 1 and metrics["kl"] >= 0
