"""Which data `kdistill evaluate` loads: the checkpoint's record, an override, or the old fallback."""

from __future__ import annotations

import json

import pytest

from kdistill.cli.main import main
from kdistill.config import DataConfig
from kdistill.data import load_dataset
from kdistill.errors import DataError
from kdistill.experiment import data_record, evaluation_data
from kdistill.models import create_model
from kdistill.train import read_checkpoint, save_checkpoint


def _old_checkpoint(path, dataset: str):
    # as written before checkpoints recorded their data: model_spec names the data set only
    data = load_dataset("digits")
    model = create_model("mlp-simple", data.input_shape, data.num_classes)
    spec = {"model": "mlp-simple", "options": {}, "input_shape": list(data.input_shape),
            "num_classes": data.num_classes, "dataset": dataset}
    return save_checkpoint(path, {"model": model}, {"role": "student", "model_spec": spec})


def test_old_checkpoint_without_record_still_evaluates(tmp_path, capsys):
    checkpoint = _old_checkpoint(tmp_path / "old.safetensors", "digits")
    assert evaluation_data(checkpoint).name == "digits"
    assert main(["evaluate", str(checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == load_dataset("digits").num_test


def test_old_checkpoint_of_an_unnamed_file_asks_for_dataset(tmp_path, capsys):
    checkpoint = _old_checkpoint(tmp_path / "old.safetensors", "reviews")
    assert main(["evaluate", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "'reviews'" in err and "--dataset" in err and "--data-dir" in err and "Traceback" not in err
    # --dataset still overrides whatever the checkpoint says
    assert main(["evaluate", str(checkpoint), "--dataset", "digits"]) == 0


def test_recorded_data_is_reused_and_dataset_overrides_it(tmp_path):
    checkpoint = _old_checkpoint(tmp_path / "new.safetensors", "ignored")
    _, meta = read_checkpoint(checkpoint)
    meta["data"] = {"dataset": "digits", "options": {}, "data_dir": None, "files": []}
    model = create_model("mlp-simple", tuple(meta["model_spec"]["input_shape"]), 10)
    save_checkpoint(checkpoint, {"model": model}, meta)
    assert evaluation_data(checkpoint).name == "digits"
    with pytest.raises(DataError, match="--dataset"):
        evaluation_data(_old_checkpoint(tmp_path / "x.safetensors", "reviews"))
    assert evaluation_data(tmp_path / "x.safetensors", dataset="digits").name == "digits"


def test_data_record_makes_paths_absolute_and_leaves_other_strings(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("x,label\n1,a\n")
    (tmp_path / "dev").mkdir()  # a folder named like an option value must not be mistaken for it
    monkeypatch.chdir(tmp_path)
    record = data_record(DataConfig(dataset="text-csv", data_dir="data",
                                    options={"path": "train.csv", "test_split": "dev",
                                             "tokenizer": "bert-base-uncased", "max_length": 8}))
    assert record["data_dir"] == str((tmp_path / "data").resolve())
    assert record["options"]["path"] == str((tmp_path / "data" / "train.csv").resolve())
    assert record["options"]["test_split"] == "dev"
    assert record["options"]["tokenizer"] == "bert-base-uncased"  # a hub name, not a local file
    assert record["files"] == ["path"] and record["options"]["max_length"] == 8
