"""Checkpoint round trip, atomic writes, and resume with identical optimiser state."""

import json

import pytest
import torch
from torch import nn

from kdistill.config import TrainConfig
from kdistill.data import load_dataset
from kdistill.distiller import Supervised
from kdistill.errors import CheckpointError
from kdistill.models import create_model
from kdistill.train import fit, read_checkpoint, restore_training_state, save_checkpoint


def tiny_cfg(**kw):
    base = {"epochs": 2, "batch_size": 64, "progress": False, "device": "cpu", "seed": 3,
            "optimizer": {"name": "adam", "lr": 1e-2}}
    base.update(kw)
    return TrainConfig.model_validate(base)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(400, 100)


def test_round_trip_restores_weights_optimizer_and_metadata(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.safetensors", {"model": model}, {"epoch": 4, "note": "x"}, opt)
    assert json.loads(path.with_suffix(".json").read_text())["epoch"] == 4
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind

    clone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    clone_opt = torch.optim.Adam(clone.parameters(), lr=0.5)
    meta = restore_training_state(path, {"model": clone}, clone_opt)
    assert meta["epoch"] == 4
    for a, b in zip(model.state_dict().values(), clone.state_dict().values()):
        assert torch.equal(a, b)
    assert clone_opt.param_groups[0]["lr"] == 0.1
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(opt.state[p]["exp_avg"], clone_opt.state[q]["exp_avg"])
        assert torch.equal(opt.state[p]["step"], clone_opt.state[q]["step"])


def test_damaged_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_resume_continues_from_saved_epoch_with_same_state(tmp_path, digits):
    # an uninterrupted 2-epoch run == a run that crashes in epoch 1 and is resumed from
    # the epoch-0 checkpoint (cosine schedule position, dropout RNG and Adam state included)
    class CrashAfter(Supervised):
        def __init__(self, model, calls):
            super().__init__(model)
            self.calls_left = calls

        def forward(self, inputs, labels, indices=None):
            if self.calls_left == 0:
                raise RuntimeError("simulated crash")
            self.calls_left -= 1
            return super().forward(inputs, labels, indices)

    def new_model():
        torch.manual_seed(0)
        return create_model("mlp-simple", digits.input_shape, 10, dropout=0.3)

    full = Supervised(new_model())
    fit(full, digits, tiny_cfg(epochs=2), out_dir=tmp_path / "full")

    steps_per_epoch = -(-int(len(digits.x_train) * 0.9) // 64)
    crashing = CrashAfter(new_model(), steps_per_epoch + 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(crashing, digits, tiny_cfg(epochs=2), out_dir=tmp_path / "crashed")
    _, meta = read_checkpoint(tmp_path / "crashed" / "last.safetensors")
    assert meta["epoch"] == 0

    resumed = Supervised(new_model())
    history = fit(resumed, digits, tiny_cfg(epochs=2), out_dir=tmp_path / "crashed",
                  resume=tmp_path / "crashed" / "last.safetensors")
    assert [e["epoch"] for e in history.epochs] == [0, 1]
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_nan_loss_stops_with_clear_message(tmp_path, digits):
    class Exploding(Supervised):
        def forward(self, inputs, labels, indices=None):
            losses = super().forward(inputs, labels, indices)
            losses["loss"] = losses["loss"] * float("nan")
            return losses

    from kdistill.errors import TrainingError

    objective = Exploding(create_model("mlp-simple", digits.input_shape, 10))
    with pytest.raises(TrainingError, match="step 0"):
        fit(objective, digits, tiny_cfg(epochs=1), out_dir=tmp_path)
    assert not (tmp_path / "last.safetensors").exists()
