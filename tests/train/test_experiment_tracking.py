"""One kdistill invocation, one tracked experiment: read back with TensorBoard's and MLflow's own readers."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import yaml

from kdistill.cli.main import main

# mlflow's own SQLAlchemy models trip a deprecation notice of SQLAlchemy 2.1
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")


def _config(tmp_path, **tracking):
    cfg = {"name": "tracked", "data": {"dataset": "digits", "limit_train": 200, "limit_test": 60},
           "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple", "options": {"hidden": [8]}},
           "train": {"epochs": 2, "progress": False}, "tracking": tracking,
           "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_one_root_with_a_folder_per_role(tmp_path):
    pytest.importorskip("tensorboard", reason="needs tensorboard: pip install 'kdistill[tracking]'")
    assert main(["distill", str(_config(tmp_path, tensorboard=True))]) == 0
    root = tmp_path / "runs" / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["student", "teacher"]
    teacher, student = _scalars(root / "teacher"), _scalars(root / "student")
    # the teacher's label loss is the teacher's, the student's terms are the distillation's
    assert "teacher" in teacher and "student" not in teacher and "kd" not in teacher
    assert {"loss", "kd", "student", "lr", "val_score"} <= set(student)
    assert [step for step, _ in student["loss"]] == [0, 1]
    # final test metrics, with the fidelity to the teacher for the distilled student
    assert {"test/accuracy", "test/agreement", "test/kl"} <= set(student)
    assert "test/accuracy" in teacher and "test/agreement" not in teacher
    import json

    metrics = json.loads((tmp_path / "runs" / "student" / "metrics.json").read_text())
    assert student["test/accuracy"][0][1] == pytest.approx(metrics["accuracy"], rel=1e-6)
    assert not list((tmp_path / "runs" / "teacher").glob("tensorboard"))  # no second root


def test_mlflow_one_parent_run_with_nested_roles_metrics_and_artifacts(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="needs mlflow: pip install 'kdistill[mlflow]'")
    assert main(["distill", str(_config(tmp_path, mlflow=True, experiment="exp"))]) == 0
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1  # one run per invocation
    parent = parents[0]
    assert parent.info.run_name == "distill tracked" and parent.info.status == "FINISHED"
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"teacher", "student"} and len(runs) == 3
    assert all(r.info.status == "FINISHED" for r in children.values())

    teacher, student = children["teacher"], children["student"]
    assert "teacher" in teacher.data.metrics and "student" not in teacher.data.metrics
    assert [m.step for m in client.get_metric_history(student.info.run_id, "kd")] == [0, 1]
    for name in ("test/accuracy", "test/agreement", "test/kl"):
        assert name in student.data.metrics
        assert parent.data.metrics[f"student/{name}"] == pytest.approx(student.data.metrics[name])
    assert "teacher/test/accuracy" in parent.data.metrics

    # the resolved config: params and config.yaml on the parent
    assert parent.data.params["train.epochs"] == "2" and parent.data.params["student.model"] == "mlp-simple"
    config = yaml.safe_load(open(client.download_artifacts(parent.info.run_id, "config.yaml", str(tmp_path))))
    assert config["student"]["options"] == {"hidden": [8]}
    # the exported student, which loads straight into its model
    from safetensors.torch import load_file

    from kdistill.models import create_model

    local = client.download_artifacts(student.info.run_id, "model/model.safetensors", str(tmp_path))
    model = create_model("mlp-simple", (1, 8, 8), 10, hidden=[8])
    model.load_state_dict(load_file(local))
    assert not (tmp_path / "mlruns").exists()  # artifacts stay beside the store, not in the working folder


def test_mlflow_file_store_uri_is_a_config_error(tmp_path, capsys):
    pytest.importorskip("mlflow", reason="needs mlflow: pip install 'kdistill[mlflow]'")
    cfg = _config(tmp_path, mlflow=True, mlflow_uri=f"file://{tmp_path / 'store'}")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "tracking.mlflow_uri" in err and "sqlite:///" in err and "Traceback" not in err


class _Refusing(Exception):
    pass


def test_a_tracking_store_that_fails_to_open_is_a_config_error(tmp_path, monkeypatch, capsys):
    """Whatever MLflow raises while it sets up (here a stand-in module), the user gets exit code 2."""
    fake = types.ModuleType("mlflow")

    def refuse(tracking_uri):
        raise _Refusing("the store refused: bad scheme\nsecond line of detail")

    fake.MlflowClient = refuse
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    cfg = _config(tmp_path, mlflow=True, mlflow_uri="bogus://store")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "tracking.mlflow_uri 'bogus://store'" in err and "the store refused: bad scheme" in err
    assert "second line" not in err
    assert not (tmp_path / "runs" / "teacher").exists()  # refused before any training


def test_a_tensorboard_folder_that_cannot_be_made_is_a_config_error(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="needs tensorboard: pip install 'kdistill[tracking]'")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the tracking folder should be")
    cfg = _config(tmp_path, tensorboard=True, dir=str(blocker))
    assert main(["train", str(cfg)]) == 2
    assert "Cannot use tracking folder" in capsys.readouterr().err


def test_python_fit_outside_an_invocation_still_tracks_on_its_own(tmp_path):
    pytest.importorskip("tensorboard", reason="needs tensorboard: pip install 'kdistill[tracking]'")
    from kdistill.config import TrackingConfig, TrainConfig
    from kdistill.data import load_dataset
    from kdistill.distiller import Supervised
    from kdistill.models import create_model
    from kdistill.train import fit

    data = load_dataset("digits").subset(100, 20)
    model = create_model("mlp-simple", data.input_shape, 10)
    torch.manual_seed(0)
    fit(Supervised(model), data, TrainConfig(epochs=1, progress=False), out_dir=tmp_path / "run",
        tracker=TrackingConfig(tensorboard=True))
    assert "loss" in _scalars(tmp_path / "run" / "tensorboard" / "train")
