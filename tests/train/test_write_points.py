"""A kill at any checkpoint write point, then --resume, ends exactly like an uninterrupted run.

Every file write of a run goes through ``atomic_write_bytes`` (temp file,
fsync, rename). The test counts those writes in an uninterrupted run, then
for each write k "kills" a fresh run there — once before the rename (a temp
file is left behind) and once just after it — and resumes from whatever
``last.safetensors`` the killed run left. The resumed run must end with the
same ``best`` and ``last`` weights and records as the uninterrupted one, and
leave no temp file.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import kdistill.train.checkpoint as checkpoint
from kdistill.config import TrainConfig
from kdistill.data import load_dataset
from kdistill.distiller import Supervised
from kdistill.errors import TrainingError
from kdistill.models import create_model
from kdistill.train import fit, read_checkpoint

EPOCHS = 4


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way catches it."""


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits").subset(192, 32)


def cfg(**kw) -> TrainConfig:
    # a noisy validation split so that the best epoch is not always the last one
    base = dict(epochs=EPOCHS, batch_size=32, val_fraction=0.1, progress=False, device="cpu", seed=1,
                optimizer={"name": "sgd", "lr": 0.3, "momentum": 0.9}, scheduler={"name": "constant"})
    return TrainConfig.model_validate({**base, **kw})


def new_objective():
    torch.manual_seed(0)
    return Supervised(create_model("mlp-simple", (1, 8, 8), 10, hidden=[16], dropout=0.2))


def run(data, out, resume=None):
    return fit(new_objective(), data, cfg(), out_dir=out, resume=resume)


def state(out):
    best, best_meta = read_checkpoint(out / "best.safetensors")
    last, last_meta = read_checkpoint(out / "last.safetensors")
    return best, best_meta, last, last_meta


def count_writes(data, out, monkeypatch):
    names = []
    real = checkpoint.atomic_write_bytes

    def counting(path, payload):
        names.append(str(path).rsplit("/", 1)[-1])
        return real(path, payload)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", counting)
    run(data, out)
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real)
    return names


def kill_at(k, before_rename, monkeypatch):
    real, calls = checkpoint.atomic_write_bytes, []

    def killing(path, payload):
        calls.append(path)
        if len(calls) == k:
            if before_rename:  # the temp file is written, the rename never happens
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.parent / f".{path.name}.99999999-killed.tmp"
                tmp.write_bytes(payload[: len(payload) // 2])
                raise Killed
            real(path, payload)
            raise Killed
        return real(path, payload)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", killing)
    return real


def test_resume_after_a_kill_at_every_write_point_matches_an_uninterrupted_run(data, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    writes = count_writes(data, reference, monkeypatch)
    assert {"best.safetensors", "last.safetensors", "best.json", "last.json"} <= set(writes)
    best_ref, best_meta_ref, last_ref, last_meta_ref = state(reference)

    for k in range(1, len(writes) + 1):
        for before_rename in (True, False):
            out = tmp_path / f"kill-{k}-{'tmp' if before_rename else 'renamed'}"
            real = kill_at(k, before_rename, monkeypatch)
            with pytest.raises(Killed):
                run(data, out)
            monkeypatch.setattr(checkpoint, "atomic_write_bytes", real)
            last = out / "last.safetensors"
            run(data, out, resume=last if last.exists() else None)
            best, best_meta, last_t, last_meta = state(out)
            where = f"kill at write {k} ({writes[k - 1]}, {'before' if before_rename else 'after'} rename)"
            assert best_meta["epoch"] == best_meta_ref["epoch"], where
            assert last_meta["best_epoch"] == last_meta_ref["best_epoch"], where
            assert [r["epoch"] for r in last_meta["history"]] == list(range(EPOCHS)), where
            for name, value in best_ref.items():
                if name.startswith("model."):
                    torch.testing.assert_close(best[name], value, msg=where)
            for name, value in last_ref.items():
                if name.startswith(("model.", "optim.")):
                    torch.testing.assert_close(last_t[name], value, msg=where)
            assert not list(out.glob(".*.tmp")), where
            assert json.loads((out / "last.json").read_text())["epoch"] == EPOCHS - 1, where


def test_an_exploding_but_finite_loss_stops_with_a_clear_message(tmp_path):
    data = load_dataset("digits").subset(256, 32)
    objective = new_objective()
    bad = TrainConfig.model_validate({"epochs": 3, "batch_size": 32, "progress": False, "device": "cpu",
                                      "optimizer": {"name": "adamw", "lr": 1e3}})
    with pytest.raises(TrainingError, match="diverged") as error:
        fit(objective, data, bad, out_dir=tmp_path)
    assert "no checkpoint of this run was written yet" in str(error.value)
    assert not (tmp_path / "best.safetensors").exists()


def test_the_last_good_checkpoint_named_after_nan_is_from_this_run_and_finite(data, tmp_path):
    out = tmp_path / "run"
    run(data, out)  # an earlier, unrelated run in the same folder
    calls = []

    class NanAtEpochTwo(Supervised):
        def forward(self, inputs, labels, indices=None):
            losses = super().forward(inputs, labels, indices)
            calls.append(1)
            if len(calls) > 2 * 6:  # six steps per epoch: the third epoch goes NaN
                losses["loss"] = losses["loss"] * math.nan
            return losses

    torch.manual_seed(0)
    objective = NanAtEpochTwo(create_model("mlp-simple", (1, 8, 8), 10, hidden=[16]))
    with pytest.raises(TrainingError, match="NaN or infinite") as error:
        fit(objective, data, cfg(), out_dir=out)
    message = str(error.value)
    assert f"'{out / 'last.safetensors'}' (epoch 1)" in message
    tensors, meta = read_checkpoint(out / "last.safetensors")
    assert meta["epoch"] == 1 and all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))

    fresh = out  # a new run in the same folder: the earlier run's last.safetensors is not this run's
    objective = NanAtEpochTwo(create_model("mlp-simple", (1, 8, 8), 10, hidden=[16]))
    calls.clear()
    calls.extend([1] * 100)  # NaN from the first step
    with pytest.raises(TrainingError, match="no checkpoint of this run was written yet"):
        fit(objective, data, cfg(), out_dir=fresh)
