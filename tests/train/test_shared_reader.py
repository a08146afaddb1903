"""Checkpoints and deployable artifacts are opened by one reader and fail the same way."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from kdistill.compress.artifact import read_artifact, write_artifact
from kdistill.errors import CheckpointError
from kdistill.train.checkpoint import META_KEY, read_checkpoint, read_checkpoint_metadata


@pytest.mark.parametrize(("reader", "label"), [(read_checkpoint, "Checkpoint"), (read_artifact, "Model file")])
def test_damaged_and_foreign_files_get_the_same_errors(tmp_path, reader, label):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(CheckpointError, match=f"^{label} '.*' is not a readable safetensors file"):
        reader(damaged)
    bad_json = tmp_path / "bad-json.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad_json), metadata={META_KEY: "{not json"})
    with pytest.raises(CheckpointError, match=f"^{label} '.*' has unreadable kdistill metadata"):
        reader(bad_json)
    with pytest.raises(CheckpointError, match=f"^{label} '.*' does not exist"):
        reader(tmp_path / "missing.safetensors")


def test_metadata_alone_matches_the_full_read(tmp_path):
    path = write_artifact(tmp_path / "m.safetensors", {"model.w": torch.ones(3)},
                          {"format": "dense", "model_spec": {"model": "mlp-simple"}})
    tensors, meta = read_artifact(path, expected_format="dense")
    assert torch.equal(tensors["model.w"], torch.ones(3))
    assert read_checkpoint_metadata(path) == meta == read_checkpoint(path)[1]
