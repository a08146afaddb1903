"""Detection through the project's one training loop: train, distil, reload, the CLI, and user errors."""

import json
from pathlib import Path

import pytest
import torch

from kdistill.cli.main import main
from kdistill.config import load_config, parse_config
from kdistill.data import load_dataset
from kdistill.detection.objective import build_objective
from kdistill.detection.task import DetectionTask
from kdistill.distiller import Distiller
from kdistill.experiment import load_model, run_distill, train_model
from kdistill.models import create_model
from kdistill.train.checkpoint import read_checkpoint_metadata
from kdistill.train.objective import FitContext

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"widths": [4, 8, 8, 16], "fpn_width": 8, "head_width": 8}
BIG = {"widths": [8, 8, 16, 16], "fpn_width": 16, "head_width": 16}


def _cfg(tmp_path, tiny_options, **distill):
    return parse_config({
        "output_dir": str(tmp_path), "data": {"dataset": "canvas-digits", "options": tiny_options},
        "teacher": {"model": "fcos-simple", "options": BIG}, "student": {"model": "fcos-simple", "options": SMALL},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"lr": 0.003}},
        "distill": distill or {"method": "crosskd"}})


def test_train_a_detector_and_reload_it(tmp_path, tiny_options):
    result = train_model(_cfg(tmp_path, tiny_options), "teacher")
    assert 0.0 <= result.metrics["AP"] <= 1.0 and "latency_ms" in result.metrics
    assert len(result.history) == 2 and all(0.0 <= e["val_score"] <= 1.0 for e in result.history)
    assert {"cls", "box", "ctr"} <= set(result.history[0])
    reloaded, meta = load_model(result.checkpoint)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(reloaded(x).cls, result.model.eval()(x).cls)
    assert meta["data"]["dataset"] == "canvas-digits"


@pytest.mark.parametrize("method, options, term", [
    ("crosskd", {"cross_at": 1}, "crosskd_cls"),
    ("crosskd", {"cross_at": 0, "cls_loss": "kl"}, "crosskd_box"),
    ("pred-mimic", {}, "mimic_cls"),
    ("feat-imitation", {}, "feat_imitation"),
])
def test_distil_with_each_method(tmp_path, tiny_options, method, options, term):
    cfg = _cfg(tmp_path, tiny_options, methods=[{"name": method, "weight": 2.0, "options": options}])
    result = run_distill(cfg)
    assert 0.0 <= result.metrics["AP"] <= 1.0
    assert term in result.history[0] and {"cls", "box", "ctr"} <= set(result.history[0])  # the fcos term
    assert (tmp_path / "student" / "best.safetensors").exists() and (tmp_path / "teacher" / "best.safetensors").exists()


def test_cached_teacher_gives_the_live_losses(tiny_options):
    data = load_dataset("canvas-digits", **tiny_options)
    torch.manual_seed(0)
    teacher = create_model("fcos-simple", data.input_shape, 10, **BIG).eval()
    student = create_model("fcos-simple", data.input_shape, 10, **SMALL)
    cfg = parse_config({"distill": {"methods": [{"name": "crosskd"}, {"name": "feat-imitation"}]}})
    objective = build_objective(cfg, student, teacher)
    assert isinstance(objective, Distiller) and isinstance(objective.task_adapter, DetectionTask)
    objective.prepare(data.x_train, FitContext(device=torch.device("cpu")))
    objective.eval()
    idx = torch.tensor([3, 0, 7])
    cached = objective(data.x_train[idx], data.y_train[idx], idx)
    live = objective(data.x_train[idx], data.y_train[idx], None)
    for key in ("loss", "crosskd_cls", "crosskd_box", "feat_imitation"):
        assert torch.allclose(cached[key], live[key], rtol=1e-5, atol=1e-6), key


def test_cli_distill_example_with_method_flag(tmp_path):
    sets = ["--set", "data.options={num_train: 48, num_test: 16, objects: [1, 2], scale: [10, 16]}",
            "--set", "train.epochs=1", "--set", "teacher_train.epochs=1", "--set", "train.batch_size=16",
            "--set", "teacher_train.progress=false",
            "--set", "teacher.options={widths: [8, 8, 16, 16], fpn_width: 16, head_width: 16}"]
    sets += ["--set", "distill.methods=[]"]  # a `methods:` list would take precedence over --method
    code = main(["distill", str(ROOT / "examples/methods/pred-mimic.yaml"), "--method", "crosskd", "--no-progress",
                 "-o", str(tmp_path), *sets])
    assert code == 0 and (tmp_path / "student" / "metrics.json").exists()
    history = read_checkpoint_metadata(tmp_path / "student" / "last.safetensors")["history"]
    assert "crosskd_cls" in history[0] and "mimic_cls" not in history[0]


@pytest.mark.parametrize("args, words", [
    (["train", "examples/methods/kd.yaml", "--set", "teacher.model=fcos-simple", "--set", "data.limit_train=40",
      "--set", "teacher.options={widths: [8, 16, 32]}"], "is an object detector"),  # 3 stages fit 8x8 digits
    (["train", "examples/methods/crosskd.yaml", "--set", "teacher.model=cnn-simple"], "not a detector"),
    (["train", "examples/methods/crosskd.yaml", "--set", "data.augment.jitter=2"], "augment.jitter"),
    (["distill", "examples/methods/crosskd.yaml", "--method", "dkd", "--set", "distill.methods=[]"],
     "distils classifier outputs"),
])
def test_user_mistakes_exit_2_in_words(args, words, tmp_path, capsys):
    if "crosskd" in args[1]:
        args = [*args, "--set", "data.options={num_train: 48, num_test: 16}"]
    code = main([args[0], str(ROOT / args[1]), *args[2:], "--no-progress", "-o", str(tmp_path),
                 "--set", "train.epochs=1", "--set", "teacher_train.epochs=1"])
    err = capsys.readouterr().err
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err


@pytest.mark.parametrize("name", ["detection-mnist", "detection-fashion-mnist"])
def test_benchmark_examples_validate(name):
    cfg = load_config(ROOT / "examples" / f"{name}.yaml")
    assert cfg.data.dataset.startswith("canvas-") and cfg.distill.method_list()


def test_cli_evaluate_a_detector_checkpoint(tmp_path, tiny_options, capsys):
    result = train_model(_cfg(tmp_path, tiny_options), "teacher")
    code = main(["evaluate", str(result.checkpoint), "--teacher", str(result.checkpoint), "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and metrics["AP"] == pytest.approx(result.metrics["AP"])
