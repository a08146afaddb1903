"""Crash safety: kill -9 mid-run and resume; NaN losses stop the run with the last good checkpoint."""

import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from kdistill.config import TrainConfig, parse_config
from kdistill.data import load_dataset
from kdistill.distiller import Supervised
from kdistill.errors import TrainingError
from kdistill.experiment import train_model
from kdistill.models import create_model
from kdistill.train import fit, read_checkpoint

# constant learning rate: the first K epochs of a long run equal a K-epoch run
CONFIG = {
    "data": {"dataset": "digits", "limit_train": 300, "limit_test": 50},
    "student": {"model": "mlp-simple"},
    "train": {"epochs": 400, "batch_size": 64, "progress": False, "device": "cpu", "seed": 5,
              "scheduler": {"name": "constant"}, "optimizer": {"name": "adam", "lr": 0.003}},
}


def test_kill_minus_nine_then_resume_continues_without_corruption(tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(dict(CONFIG, output_dir=str(tmp_path / "run"))))
    out = tmp_path / "run" / "student"
    last = out / "last.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "kdistill", "train", str(cfg_path), "--role", "student"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.3))  # a random moment, possibly mid-write
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    _, meta = read_checkpoint(last)  # the checkpoint on disk is whole, not half-written
    killed_after = int(meta["epoch"])
    target = killed_after + 3
    resumed = subprocess.run([sys.executable, "-m", "kdistill", "train", str(cfg_path), "--role", "student",
                              "--resume", str(last), "--epochs", str(target)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    tensors, meta = read_checkpoint(last)
    assert int(meta["epoch"]) == target - 1
    assert [r["epoch"] for r in meta["history"]] == list(range(target))
    assert not list(out.glob(".*.tmp"))  # orphans of the killed write were cleaned up

    # the killed-and-resumed run ends exactly where an uninterrupted run of the same length does
    cfg = parse_config(dict(CONFIG, train=dict(CONFIG["train"], epochs=target)))
    reference = train_model(cfg, "student", out_dir=tmp_path / "reference")
    ref_tensors, _ = read_checkpoint(tmp_path / "reference" / "last.safetensors")
    for name, value in ref_tensors.items():
        if name.startswith("model."):
            torch.testing.assert_close(tensors[name], value, atol=1e-6, rtol=1e-5)
    assert reference.history[-1]["epoch"] == target - 1


def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path):
    data = load_dataset("digits").subset(256, 32)
    calls = []

    def loss_fn(logits, labels):
        calls.append(1)
        loss = nn.functional.cross_entropy(logits, labels)
        return loss * math.nan if len(calls) == 7 else loss  # step 6, in the second epoch

    model = create_model("mlp-simple", data.input_shape, data.num_classes)
    cfg = TrainConfig.model_validate({"epochs": 3, "batch_size": 64, "val_fraction": 0.0,
                                      "progress": False, "device": "cpu"})
    with pytest.raises(TrainingError) as error:
        fit(Supervised(model, loss_fn=loss_fn), data, cfg, out_dir=tmp_path)
    message = str(error.value)
    assert "step 6 (epoch 1)" in message and str(tmp_path / "last.safetensors") in message
    tensors, meta = read_checkpoint(tmp_path / "last.safetensors")
    assert meta["epoch"] == 0  # the NaN epoch was never saved
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))

