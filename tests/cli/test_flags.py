"""CLI flags reach what they name: paths are literal, schedules are scoped, resume never retrains a teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from helpers import err_text
from helpers import write_config as write_config_from
from safetensors.torch import save_file

from kdistill.cli.main import main
from kdistill.train import read_checkpoint
from kdistill.train.checkpoint import META_KEY

CONFIG = {
    "name": "flags",
    "data": {"dataset": "digits", "limit_train": 160, "limit_test": 40},
    "teacher": {"model": "mlp-simple"},
    "student": {"model": "mlp-simple", "options": {"hidden": [8]}},
    "teacher_train": {"epochs": 3, "batch_size": 64, "seed": 0, "device": "cpu"},
    "train": {"epochs": 2, "batch_size": 64, "device": "cpu"},
}


def write_config(folder, **changes):
    return write_config_from(folder, CONFIG, **changes)




def meta_of(path):
    return read_checkpoint(path)[1]


@pytest.mark.parametrize("folder", ["run #2", "null", "3", "a: b", "~nope", "[x]"])
def test_output_dir_is_a_path_never_yaml(tmp_path, folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path)
    assert main(["train", str(cfg), "--role", "student", "--no-progress", "-o", folder]) == 0
    assert (tmp_path / folder / "student" / "best.safetensors").is_file()


def test_data_dir_and_teacher_are_paths_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path)
    assert main(["train", str(cfg), "--no-progress", "-o", "t #1"]) == 0
    teacher = tmp_path / "t #1" / "teacher" / "best.safetensors"
    assert main(["distill", str(cfg), "--no-progress", "-o", "s", "--teacher", str(teacher)]) == 0
    assert not (tmp_path / "s" / "teacher").exists()  # the given teacher was used, none trained
    # a data folder whose name YAML would read as a mapping is still a folder name
    assert main(["train", str(cfg), "--role", "student", "--no-progress", "-o", "d",
                 "--data-dir", "x: y"]) == 0


def test_train_epochs_flag_and_set_apply_to_the_teacher_it_trains(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["train", str(cfg), "--no-progress", "-o", str(tmp_path / "a"), "--epochs", "1"]) == 0
    assert meta_of(tmp_path / "a" / "teacher" / "last.safetensors")["epoch"] == 0
    assert main(["train", str(cfg), "--no-progress", "-o", str(tmp_path / "b"), "--set", "train.epochs=2"]) == 0
    assert meta_of(tmp_path / "b" / "teacher" / "last.safetensors")["epoch"] == 1
    assert "applied train.epochs to teacher_train" in err_text(capsys)


def test_distill_flags_scope_student_epochs_teacher_epochs_and_shared_seed(tmp_path, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "run"
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--epochs", "1",
                 "--teacher-epochs", "2", "--seed", "7"]) == 0
    teacher, student = meta_of(out / "teacher" / "last.safetensors"), meta_of(out / "student" / "last.safetensors")
    assert (teacher["epoch"], student["epoch"]) == (1, 0)
    assert teacher["train"]["seed"] == student["train"]["seed"] == 7
    assert teacher["train"]["progress"] is student["train"]["progress"] is False
    assert "also the teacher's schedule" not in err_text(capsys)  # the teacher has its own schedule


def test_distill_epochs_says_when_it_sets_the_teachers_epochs_too(tmp_path, capsys):
    raw = {k: v for k, v in CONFIG.items() if k != "teacher_train"}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--epochs", "1"]) == 0
    assert "a teacher trained by this run trains for 1 epochs too" in err_text(capsys)
    assert meta_of(out / "teacher" / "last.safetensors")["epoch"] == 0  # applied, as said


def test_method_flag_replaces_the_configured_list(tmp_path):
    cfg = write_config(tmp_path, distill={"methods": [{"name": "pkt"}]})
    out = tmp_path / "run"
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--method", "dkd"]) == 0
    distill = meta_of(out / "student" / "best.safetensors")["distill"]
    assert distill["method"] == "dkd" and distill["methods"] == []


def test_resume_reuses_the_finished_teacher_and_reports_changed_settings(tmp_path, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "run"
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress"]) == 0
    teacher_file = out / "teacher" / "best.safetensors"
    before = (teacher_file.stat().st_mtime_ns, teacher_file.read_bytes())
    capsys.readouterr()
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--epochs", "3",
                 "--resume", str(out / "student" / "last.safetensors")]) == 0
    assert (teacher_file.stat().st_mtime_ns, teacher_file.read_bytes()) == before
    assert meta_of(out / "student" / "last.safetensors")["epoch"] == 2
    assert "train.epochs: 2 -> 3" in err_text(capsys)


def test_resume_reports_loss_and_world_size_changes(tmp_path, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "run"
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress"]) == 0
    last = out / "student" / "last.safetensors"
    changed = ["--set", "distill.temperature=2", "--set", "distill.alpha=0.5", "--method", "dkd"]
    capsys.readouterr()
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--epochs", "3", "--resume", str(last),
                 *changed]) == 0
    text = err_text(capsys)
    for change in ("distill.temperature: 4.0 -> 2.0", "distill.alpha: 0.9 -> 0.5", "distill.method: 'kd' -> 'dkd'"):
        assert change in text
    # as if the checkpoint had come from a 2-process torchrun job
    tensors, meta = read_checkpoint(last)
    save_file(tensors, str(last), metadata={META_KEY: json.dumps(dict(meta, world_size=2))})
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--epochs", "4", "--resume", str(last),
                 *changed]) == 0
    text = err_text(capsys)
    assert "resuming a 2-process run as 1 process" in text
    assert "distill.temperature" not in text  # the same loss as the run it continues


def test_resume_with_other_data_is_refused_before_a_teacher_trains(tmp_path, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "run"
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress"]) == 0
    teacher_file = out / "teacher" / "best.safetensors"
    before = teacher_file.read_bytes()
    capsys.readouterr()
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--epochs", "3",
                 "--resume", str(out / "student" / "last.safetensors"), "--set", "data.limit_train=120"]) == 2
    text = err_text(capsys)
    assert "trained on other data" in text and "limit_train" in text
    assert teacher_file.read_bytes() == before
    # a changed teacher schedule would retrain the teacher under the resumed student: refused too
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--epochs", "3",
                 "--resume", str(out / "student" / "last.safetensors"),
                 "--set", "teacher_train.optimizer.lr=0.01"]) == 2
    assert "a new teacher would be trained under the half-trained student" in err_text(capsys)
    assert teacher_file.read_bytes() == before


def test_an_unfinished_teacher_is_resumed_not_reused(tmp_path, capsys):
    from kdistill.config import load_config
    from kdistill.experiment import build_run, execute

    cfg = write_config(tmp_path)
    out = tmp_path / "run"

    def stop(epoch, record):
        raise KeyboardInterrupt  # the teacher is interrupted after 1 of its 3 epochs

    with pytest.raises(KeyboardInterrupt):
        execute(build_run(load_config(cfg), "teacher", out_dir=out / "teacher"), on_epoch_end=stop)
    assert meta_of(out / "teacher" / "last.safetensors")["epoch"] == 0
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress"]) == 0
    history = meta_of(out / "teacher" / "last.safetensors")["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert "resuming the unfinished teacher" in err_text(capsys)  # shown without -v


def test_a_finished_teacher_is_never_stretched_to_a_longer_schedule(tmp_path, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "-o", str(out), "--no-progress", "--epochs", "1"]) == 0  # a finished 1-epoch teacher
    teacher = out / "teacher" / "best.safetensors"
    before = teacher.read_bytes()
    capsys.readouterr()
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress"]) == 2  # the config says 3 epochs
    err = err_text(capsys)
    assert "finished a 1-epoch schedule" in err and "3 epochs (teacher_train.epochs)" in err and "--overwrite" in err
    assert teacher.read_bytes() == before and not (out / "student").exists()
    assert main(["distill", str(cfg), "-o", str(out), "--no-progress", "--overwrite"]) == 0
    history = meta_of(out / "teacher" / "last.safetensors")["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2]  # a new 3-epoch teacher, not the old one extended
    assert meta_of(out / "teacher" / "last.safetensors")["train"]["epochs"] == 3


def test_resume_checks_role_and_optimiser(tmp_path, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "-o", str(out), "--no-progress"]) == 0
    teacher_last = out / "teacher" / "last.safetensors"
    assert main(["train", str(cfg), "--role", "student", "-o", str(tmp_path / "s"), "--no-progress",
                 "--resume", str(teacher_last)]) == 2
    assert "written while training the teacher" in err_text(capsys)
    assert main(["train", str(cfg), "-o", str(out), "--no-progress", "--resume", str(teacher_last),
                 "--set", "teacher_train.optimizer.name=sgd", "--epochs", "4"]) == 2
    assert "holds adamw optimiser state" in err_text(capsys)


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run" / "student"
    out.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom kdistill.train.lock import folder_lock\n"
        f"with folder_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = write_config(tmp_path)
        started = time.monotonic()
        assert main(["train", str(cfg), "--role", "student", "-o", str(tmp_path / "run"), "--no-progress"]) == 2
        assert time.monotonic() - started < 30
        err = err_text(capsys)
        assert f"pid {holder.pid}" in err and "another --output-dir" in err
    finally:
        holder.kill()
        holder.wait()


def test_schemes_honour_teacher_or_refuse_it_in_words(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["train", str(cfg), "--no-progress", "-o", str(tmp_path / "t"), "--epochs", "2",
                 "--set", "teacher_train.keep_epochs=true"]) == 0
    kept = tmp_path / "t" / "teacher" / "best.safetensors"
    # early-stop takes the kept epochs beside the given checkpoint instead of training a new teacher
    assert main(["distill", str(cfg), "--no-progress", "-o", str(tmp_path / "es"), "--teacher", str(kept),
                 "--method", "early-stop"]) == 0
    assert not (tmp_path / "es" / "teacher").exists()
    lone = tmp_path / "lone" / "best.safetensors"
    lone.parent.mkdir()
    lone.write_bytes(kept.read_bytes())
    assert main(["distill", str(cfg), "--no-progress", "-o", str(tmp_path / "x"), "--teacher", str(lone),
                 "--method", "early-stop"]) == 2
    assert "no kept epochs beside it" in err_text(capsys)
    assert main(["distill", str(cfg), "--no-progress", "-o", str(tmp_path / "x"), "--teacher", str(kept),
                 "--method", "multi-teacher"]) == 2
    assert "two copies of the same model" in err_text(capsys)
    assert main(["distill", str(cfg), "--no-progress", "-o", str(tmp_path / "x"), "--teacher", str(kept),
                 "--method", "dml"]) == 2
    assert "without a teacher" in err_text(capsys)
    assert not (tmp_path / "x").exists()
