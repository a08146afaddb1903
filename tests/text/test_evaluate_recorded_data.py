"""`kdistill evaluate` reloads a text-csv data set from what its checkpoint records."""

from __future__ import annotations

import json

import yaml

from kdistill.cli.main import main
from kdistill.train.checkpoint import read_checkpoint_metadata


def _train_on_csv(tmp_path, monkeypatch, tiny_hf_dir, tiny_tsv):
    # a relative path, read from the working folder: the checkpoint must store it absolute
    work = tmp_path / "work"
    work.mkdir()
    # the shared tab-separated fixture, rewritten as a CSV with text labels
    pairs = [line.split("\t") for line in tiny_tsv.read_text(encoding="utf-8").splitlines()[1:]]
    rows = ["sentence,label"] + [f"{text.replace(',', '')},{'pos' if y == '1' else 'neg'}" for y, text in pairs]
    (work / "reviews.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = {
        "data": {"dataset": "text-csv", "options": {"path": "reviews.csv", "tokenizer": str(tiny_hf_dir),
                                                    "max_length": 12, "test_fraction": 0.25}},
        "student": {"model": "text-cnn", "options": {"tokenizer": str(tiny_hf_dir), "channels": 4,
                                                     "widths": [2], "embedding_dim": 8}},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False},
        "output_dir": str(tmp_path / "run"),
    }
    (work / "text.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(work)
    assert main(["train", "text.yaml", "--role", "student"]) == 0
    monkeypatch.chdir(tmp_path)  # evaluate from elsewhere: the relative path must not matter
    return work / "reviews.csv", tmp_path / "run" / "student" / "best.safetensors"


def test_evaluate_reloads_text_csv_then_reports_a_moved_file(tiny_hf_dir, tiny_tsv, tmp_path, monkeypatch, capsys):
    csv, checkpoint = _train_on_csv(tmp_path, monkeypatch, tiny_hf_dir, tiny_tsv)
    record = read_checkpoint_metadata(checkpoint)["data"]
    assert record["dataset"] == "text-csv"
    assert record["options"]["path"] == str(csv.resolve()) and "path" in record["files"]
    assert record["options"]["max_length"] == 12
    capsys.readouterr()

    assert main(["evaluate", str(checkpoint), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["n_test"] == 10

    moved = csv.rename(tmp_path / "moved.csv")
    assert main(["evaluate", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "no longer exists" in err and str(csv.resolve()) in err and "--data-option path=" in err
    assert "Traceback" not in err

    # the suggested fix works: point the recorded option at the file's new place
    assert main(["evaluate", str(checkpoint), "--json", "--data-option", f"path={moved}"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 10

    # or, when the whole folder moved, name the new folder: the file is found there by name
    (tmp_path / "new").mkdir()
    moved.rename(tmp_path / "new" / "reviews.csv")
    assert main(["evaluate", str(checkpoint), "--json", "--data-dir", str(tmp_path / "new")]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 10
