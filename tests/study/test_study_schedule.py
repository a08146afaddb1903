"""What a study plans to write, the progress it prints, and the quick schedule of the example files."""

import re
from pathlib import Path

from kdistill.models import create_model
from kdistill.study.config import StudyConfig, load_study_config
from kdistill.study.runner import planned_runs, run_study

ROOT = Path(__file__).resolve().parents[2]
ONE_MODEL = {
    "name": "one",
    "data": {"dataset": "digits", "limit_train": 200, "limit_test": 60},
    "models": ["mlp-simple"],
    "train": {"epochs": 1, "batch_size": 64, "progress": False},
    "prune": {"sparsities": [0.5], "structured": [0.5], "finetune_epochs": 0},
    "quantize": {"calibration_samples": 16},
    "measure": {"batch_sizes": [1, 4], "repeats": 1, "warmup": 0, "onnx": False},
}


def test_progress_counts_rows_done_and_left_and_resumes(tmp_path, capsys):
    cfg = StudyConfig.model_validate(ONE_MODEL)
    result = run_study(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "5 result rows planned, 0 already in" in out
    progress = re.findall(r"^\[(\d+)/5, (\d+) left, [\d.]+ min\] (\S+)", out, re.M)
    assert [(int(d), int(left)) for d, left, _ in progress] == [(i, 5 - i) for i in range(1, 6)]
    # the rows come in the planned order
    sizes = {"mlp-simple": 1}
    assert [run for *_, run in progress] == planned_runs(cfg, sizes) == [r["run"] for r in result.rows]
    run_study(cfg, tmp_path)
    assert "5 result rows planned, 5 already in" in capsys.readouterr().out


def quick_plan(name):
    cfg = load_study_config(ROOT / "examples" / name).quick_version()
    sizes = {m: sum(p.numel() for p in create_model(m, (1, 28, 28), 10).parameters()) for m in cfg.models}
    return cfg, planned_runs(cfg, sizes)


def test_the_quick_schedule_of_the_examples_leaves_out_the_costly_models():
    for name in ("study-fashion-mnist.yaml", "study-mnist.yaml"):
        cfg, plan = quick_plan(name)
        assert not {"cnn-deep", "resnet-medium", "resnet-deep"} & set(cfg.models)
        # 6 models x (baseline, 2 int8, 3 pruned) + 6 pairs x (distilled, distilled+int8)
        assert len(plan) == 48, plan
        assert sum(r.startswith("distilled/") for r in plan) == 6
        assert len(load_study_config(ROOT / "examples" / name).models) == 9  # the full schedule is unchanged
