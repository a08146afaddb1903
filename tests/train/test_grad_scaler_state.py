"""fp16's gradient-scaler state travels with the checkpoint and is restored on resume."""

import logging
import math

import pytest
import torch
from torch import nn

from kdistill.config import TrainConfig
from kdistill.data import DataSplits
from kdistill.distiller import Supervised
from kdistill.errors import CheckpointError
from kdistill.train import fit, loop
from kdistill.train.checkpoint import (
    read_checkpoint_metadata,
    restore_training_state,
    save_checkpoint,
    scaler_record,
)


def scaler(**kw):
    # a CPU scaler stands in for CUDA's: the same state and the same save/restore code
    return torch.amp.GradScaler("cpu", **kw)


def stepped_scaler():
    """A scaler whose state differs from a fresh one's: one overflow backed it off, one good step counted."""
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    s = scaler(init_scale=1024.0, growth_interval=5)
    for value in (math.inf, 1.0):
        optimizer.zero_grad()
        s.scale(model(torch.full((2, 3), value)).sum()).backward()
        s.step(optimizer)
        s.update()
    return model, optimizer, s


def test_the_scaler_state_is_saved_and_restored(tmp_path):
    model, optimizer, saved = stepped_scaler()
    assert saved.get_scale() == 512.0 and saved.state_dict()["_growth_tracker"] == 1
    path = save_checkpoint(tmp_path / "last.safetensors", {"model": model}, {"epoch": 0}, optimizer, saved)
    assert read_checkpoint_metadata(path)["grad_scaler"]["scale"] == 512.0
    fresh = scaler()
    restore_training_state(path, {"model": model}, optimizer, fresh)
    assert fresh.state_dict() == saved.state_dict()
    assert fresh.get_scale() == 512.0


def test_a_checkpoint_without_scaler_state_leaves_the_scaler_fresh(tmp_path, caplog):
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "last.safetensors", {"model": model}, {"epoch": 0}, optimizer)
    assert "grad_scaler" not in read_checkpoint_metadata(path)
    fresh = scaler(init_scale=8.0)
    with caplog.at_level(logging.WARNING, logger="kdistill"):
        restore_training_state(path, {"model": model}, optimizer, fresh)
    assert fresh.get_scale() == 8.0 and "no fp16 gradient-scaler state" in caplog.text


@pytest.mark.parametrize("bad", [{"scale": -1.0}, {"scale": "big"}, {"growth_tracker": -3}, {"backoff_factor": 2.0}])
def test_a_hostile_scaler_record_is_refused(tmp_path, bad):
    model, optimizer, saved = stepped_scaler()
    record = dict(scaler_record(saved), **bad)
    path = save_checkpoint(tmp_path / "bad.safetensors", {"model": model}, {"epoch": 0, "grad_scaler": record},
                           optimizer)
    with pytest.raises(CheckpointError, match="grad_scaler"):
        restore_training_state(path, {"model": model}, optimizer, scaler())


def test_fit_resumes_with_the_scale_it_had_reached(tmp_path, monkeypatch):
    # the loop's scaler is a CUDA fp16 feature; a CPU scaler that doubles every step makes its state visible
    monkeypatch.setattr(loop, "grad_scaler", lambda device, amp: scaler(init_scale=8.0, growth_interval=1))
    torch.manual_seed(0)
    x, y = torch.randn(60, 4), torch.arange(60) % 2
    data = DataSplits("toy", x, y, x[:6], y[:6], 2, (4,))
    cfg = {"batch_size": 20, "progress": False, "device": "cpu", "val_fraction": 0.0, "amp": "off",
           "optimizer": {"name": "sgd", "lr": 0.01}}
    model = nn.Linear(4, 2)
    fit(Supervised(model), data, TrainConfig(epochs=1, **cfg), out_dir=tmp_path)
    assert read_checkpoint_metadata(tmp_path / "last.safetensors")["grad_scaler"]["scale"] == 64.0  # 8 * 2**3
    fit(Supervised(model), data, TrainConfig(epochs=2, **cfg), out_dir=tmp_path,
        resume=tmp_path / "last.safetensors")
    assert read_checkpoint_metadata(tmp_path / "last.safetensors")["grad_scaler"]["scale"] == 512.0  # not 64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: fp16 training is a CUDA feature")
def test_fp16_on_cuda_checkpoints_its_scaler(tmp_path):
    x, y = torch.randn(60, 4), torch.arange(60) % 2
    data = DataSplits("toy", x, y, x[:6], y[:6], 2, (4,))
    cfg = TrainConfig(epochs=1, batch_size=20, progress=False, device="cuda", amp="fp16", val_fraction=0.0)
    fit(Supervised(nn.Linear(4, 2)), data, cfg, out_dir=tmp_path)
    assert read_checkpoint_metadata(tmp_path / "last.safetensors")["grad_scaler"]["scale"] > 0
