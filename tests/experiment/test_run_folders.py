"""Runs are kept: a folder holding a run is never written over, every run folder holds its resolved
config and its log, files get the user's umask, and no lock file stays behind."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from helpers import err_text

from kdistill.cli.main import main
from kdistill.config import dump_config, load_config, parse_config
from kdistill.experiment import build_run, execute
from kdistill.experiment.runs import RUN_CONFIG, RUN_LOG
from kdistill.io import atomic_write_bytes
from kdistill.train import lock as lock_module
from kdistill.train import read_checkpoint
from kdistill.train.lock import LOCK_NAME, folder_lock

CONFIG = {
    "name": "kept",
    "data": {"dataset": "digits", "limit_train": 160, "limit_test": 40},
    "teacher": {"model": "mlp-simple"},
    "student": {"model": "mlp-simple", "options": {"hidden": [8]}},
    "teacher_train": {"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu", "progress": False},
    "train": {"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu", "progress": False},
}


@pytest.fixture
def cfg_path(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path




def test_a_finished_student_is_never_replaced_by_another_method(tmp_path, cfg_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", str(cfg_path), "-o", str(out)]) == 0
    student = out / "student" / "best.safetensors"
    before = student.read_bytes()
    capsys.readouterr()
    assert main(["distill", str(cfg_path), "-o", str(out), "--method", "dkd"]) == 2
    err = err_text(capsys)
    assert f"'{out / 'student'}' already holds a finished student run" in err
    assert "--overwrite" in err and "--output-dir (-o) NEW_FOLDER" in err and "--resume" not in err
    assert student.read_bytes() == before  # the kd student is untouched
    assert main(["distill", str(cfg_path), "-o", str(out), "--method", "dkd", "--overwrite"]) == 0
    assert read_checkpoint(student)[1]["distill"]["method"] == "dkd"


def test_an_unfinished_run_is_continued_with_resume_or_replaced(tmp_path, cfg_path, capsys):
    out = tmp_path / "run"

    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(build_run(load_config(cfg_path), "student", out_dir=out / "student"), on_epoch_end=stop)
    last = out / "student" / "last.safetensors"
    assert main(["train", str(cfg_path), "--role", "student", "-o", str(out)]) == 2
    err = err_text(capsys)
    assert "an unfinished student run (stopped after epoch 1 of 2)" in err and f"--resume {last}" in err
    assert main(["train", str(cfg_path), "--role", "student", "-o", str(out), "--resume", str(last)]) == 0
    assert [r["epoch"] for r in read_checkpoint(last)[1]["history"]] == [0, 1]
    log = (out / "student" / RUN_LOG).read_text()
    assert "epoch 0 loss" in log and "epoch 1 loss" in log  # the resumed run added to the same log


def test_the_saved_config_reproduces_the_run(tmp_path, cfg_path):
    out = tmp_path / "run"
    assert main(["train", str(cfg_path), "--role", "student", "-o", str(out), "--epochs", "1",
                 "--set", "train.optimizer.lr=0.01"]) == 0
    saved = out / "student" / RUN_CONFIG
    cfg = load_config(saved)
    expected = load_config(cfg_path, ["train.epochs=1", "train.optimizer.lr=0.01"])
    expected.output_dir = str(out)
    assert cfg == expected  # loads and validates to the config that ran, flags included
    assert main(["train", str(saved), "--role", "student", "-o", str(tmp_path / "again")]) == 0
    first = read_checkpoint(out / "student" / "best.safetensors")[0]
    again = read_checkpoint(tmp_path / "again" / "student" / "best.safetensors")[0]
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    log = (out / "student" / RUN_LOG).read_text()
    assert "epoch 0 loss" in log and "epoch 1 loss" not in log


def test_a_distillation_run_keeps_the_config_of_each_model(tmp_path, cfg_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(cfg_path), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["distill", str(cfg_path), "-o", str(out), "--set", "distill.temperature=3"]) == 0
    assert "reusing the finished teacher" in err_text(capsys)  # said without -v
    assert load_config(out / "teacher" / RUN_CONFIG).distill.temperature == 4.0
    assert load_config(out / "student" / RUN_CONFIG).distill.temperature == 3.0
    assert not list(out.rglob(LOCK_NAME))


def test_print_config_shows_the_resolved_config_and_loss_without_training(tmp_path, cfg_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", str(cfg_path), "-o", str(out), "--print-config", "--method", "pkt",
                 "--set", "distill.alpha=0.25"]) == 0
    text = capsys.readouterr().out
    printed = parse_config(yaml.safe_load(text))
    assert printed.distill.method == "pkt" and printed.output_dir == str(out)
    assert "#   0.75 x student" in text and "#   0.25 x kd" in text and "#   1 x pkt" in text
    assert not out.exists()
    assert main(["train", str(cfg_path), "--print-config"]) == 0
    assert "# loss: cross-entropy with the labels" in capsys.readouterr().out


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_run_files_get_the_users_umask(tmp_path, cfg_path, umask):
    out = tmp_path / "run"
    assert main(["train", str(cfg_path), "--role", "student", "-o", str(out)]) == 0
    files = [p for p in (out / "student").iterdir() if p.is_file()]
    assert {"best.safetensors", "last.safetensors", "metrics.json", RUN_CONFIG, RUN_LOG} <= {p.name for p in files}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o644 for p in files}
    umask(0o027)
    atomic_write_bytes(tmp_path / "private.bin", b"x")
    assert stat.S_IMODE((tmp_path / "private.bin").stat().st_mode) == 0o640


def test_no_lock_file_stays_after_a_clean_exit_or_an_error(tmp_path):
    folder = tmp_path / "f"
    with folder_lock(folder):
        assert (folder / LOCK_NAME).is_file()
    assert not (folder / LOCK_NAME).exists()
    with pytest.raises(RuntimeError), folder_lock(folder):
        raise RuntimeError("a failed run")
    assert not (folder / LOCK_NAME).exists()


# the lock module alone (it needs kdistill.errors only): a subprocess starts in a fraction of a second
# instead of importing torch through kdistill.train
LOAD_LOCK = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("kdistill_lock_alone", sys.argv[2])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
"""

HOLDER = LOAD_LOCK + """
with lock.folder_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""

TRY = LOAD_LOCK + """
from kdistill.errors import ConfigError
try:
    with lock.folder_lock(sys.argv[1]):
        sys.exit(0)
except ConfigError:
    sys.exit(3)
"""


def test_a_waiter_that_locked_a_removed_lock_file_locks_the_new_one(tmp_path):
    """The holder removes the lock file as it lets go; the process that was waiting on that file must
    not go on holding a lock nobody else can see, or a third process would write the folder with it."""
    folder = tmp_path / "f"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), lock_module.__file__], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    waiting, acquired, release = threading.Event(), threading.Event(), threading.Event()

    class Seen(logging.Handler):
        def emit(self, record):
            if "waiting for another kdistill process" in record.getMessage():
                waiting.set()

    def waiter():
        with folder_lock(folder, wait=True):
            acquired.set()
            release.wait(60)

    handler = Seen()
    logging.getLogger("kdistill").addHandler(handler)
    thread = threading.Thread(target=waiter)
    try:
        assert holder.stdout.readline().strip() == "held"
        thread.start()
        assert waiting.wait(60)  # the waiter opened the holder's file and blocks on it
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(60) == 0
        assert acquired.wait(60)
        third = subprocess.run([sys.executable, "-c", TRY, str(folder), lock_module.__file__], timeout=120)
        assert third.returncode == 3  # refused: the waiter holds the lock on the file under the name
    finally:
        release.set()
        thread.join(60)
        logging.getLogger("kdistill").removeHandler(handler)
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not (folder / LOCK_NAME).exists()


def test_an_earlier_run_is_read_from_its_last_checkpoint(tmp_path):
    from kdistill.experiment.runs import earlier_run

    assert earlier_run(tmp_path) is None
    out = tmp_path / "s"
    execute(build_run(parse_config(json.loads(json.dumps(CONFIG))), "student", out_dir=out))
    run = earlier_run(out)
    assert run is not None and run.finished and run.role == "student" and (run.epoch, run.epochs) == (1, 2)


EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").rglob("*.yaml")
                  if "study" not in p.name)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_survives_the_saved_config_round_trip(example):
    cfg = load_config(example)
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


def test_python_fit_into_a_folder_another_process_trains_in_is_refused(tmp_path):
    """fit() locks its out_dir as CLI runs do: a second writer would interleave the first one's checkpoints."""
    from kdistill.config import TrainConfig
    from kdistill.data import load_dataset
    from kdistill.distiller import Supervised
    from kdistill.errors import ConfigError
    from kdistill.models import create_model
    from kdistill.train import fit

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), lock_module.__file__], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    data = load_dataset("digits").subset(100, 20)
    cfg = TrainConfig(epochs=1, progress=False)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="Another kdistill process .* is training in"):
            fit(Supervised(create_model("mlp-simple", data.input_shape, 10)), data, cfg, out_dir=folder)
        assert not (folder / "last.safetensors").exists()
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(60)
    fit(Supervised(create_model("mlp-simple", data.input_shape, 10)), data, cfg, out_dir=folder)  # free again
    assert (folder / "last.safetensors").is_file() and not (folder / LOCK_NAME).exists()
