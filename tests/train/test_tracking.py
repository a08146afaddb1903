"""history.csv, TensorBoard and MLflow: what fit reports each epoch, read back from the files."""

from __future__ import annotations

import csv
import sys

import pytest
import torch

from kdistill.config import TrackingConfig, TrainConfig, parse_config
from kdistill.data import DataSplits
from kdistill.distiller import Supervised
from kdistill.errors import ConfigError
from kdistill.models.mlp import MLP
from kdistill.train import fit
from kdistill.train.tracking import Tracker, flatten_params, write_history_csv


def toy() -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return DataSplits("toy", x[:128], y[:128], x[128:], y[128:], 2, (8,))


def train(tmp_path, tracking, epochs: int = 2):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=epochs, batch_size=32, progress=False, device="cpu", val_fraction=0.25)
    return fit(Supervised(MLP(8, (16,), 2)), toy(), cfg, out_dir=tmp_path / "run",
               metadata={"model_spec": {"model": "mlp"}}, tracker=tracking)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_history_csv_is_written_without_tracking(tmp_path):
    history = train(tmp_path, None)
    rows = read_csv(tmp_path / "run" / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row, record in zip(rows, history.epochs):
        assert set(row) == set(record)
        assert float(row["loss"]) == pytest.approx(record["loss"], rel=1e-12)
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert not list((tmp_path / "run").glob(".*tmp*"))  # no temporary file left behind


def test_tensorboard_scalars_equal_the_history(tmp_path):
    pytest.importorskip("tensorboard", reason="needs tensorboard: pip install 'kdistill[tracking]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = train(tmp_path, TrackingConfig(tensorboard=True))
    logdir = tmp_path / "run" / "tensorboard" / "train"
    assert list(logdir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logdir))
    events.Reload()
    assert {"loss", "lr", "val_score", "seconds"} <= set(events.Tags()["scalars"])
    for tag in ("loss", "val_score", "lr"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [0, 1]
        # event files store float32
        assert [s.value for s in scalars] == pytest.approx([r[tag] for r in history.epochs], rel=1e-6)
    assert "params/text_summary" in events.Tags()["tensors"]  # the settings, logged once as text


# mlflow's own SQLAlchemy models trip a deprecation notice of SQLAlchemy 2.1
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")
def test_mlflow_local_store(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="needs mlflow: pip install 'kdistill[mlflow]'")
    pytest.importorskip("sqlalchemy", reason="the MLflow store needs sqlalchemy (part of mlflow)")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    history = train(tmp_path, TrackingConfig(mlflow=True, mlflow_uri=uri, experiment="toy"))
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.batch_size"] == "32"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [0, 1]
    assert [m.value for m in losses] == pytest.approx([r["loss"] for r in history.epochs], rel=1e-9)


def test_missing_library_is_a_config_error_with_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"pip install 'kdistill\[tracking\]'"):
        train(tmp_path, TrackingConfig(tensorboard=True))
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match=r"pip install 'kdistill\[mlflow\]'"):
        Tracker.open(TrackingConfig(mlflow=True), tmp_path)


def test_config_section_and_helpers(tmp_path):
    cfg = parse_config({"tracking": {"tensorboard": True, "dir": "tb"}})
    assert cfg.tracking.tensorboard and not cfg.tracking.mlflow and cfg.tracking.dir == "tb"
    with pytest.raises(ConfigError, match="tracking.tensorbord"):
        parse_config({"tracking": {"tensorbord": True}})
    assert not Tracker.open(None).active and not Tracker.open(TrackingConfig()).active
    with pytest.raises(ConfigError, match="tracking.dir"):
        Tracker.open(TrackingConfig(tensorboard=True), None)
    assert flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}
    path = write_history_csv(tmp_path / "h.csv", [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5, "x": 2}])
    assert read_csv(path)[1] == {"epoch": "1", "loss": "0.5", "x": "2"}


def _fake_mlflow(monkeypatch, failure: Exception | None = None):
    """An ``mlflow`` module whose client fails like a broken store would (or records that it was used)."""
    import types

    module = types.ModuleType("mlflow")
    module.opened = []

    class Client:
        def __init__(self, tracking_uri):
            module.opened.append(tracking_uri)
            if failure is not None:
                raise failure

    module.MlflowClient = Client
    monkeypatch.setitem(sys.modules, "mlflow", module)
    return module


def _closed_loopback_port() -> int:
    import socket

    with socket.socket() as probe:  # a port the system just handed out, closed again: nothing listens
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mlflow_store_errors_are_config_errors(tmp_path, monkeypatch):
    # MLflow 3 refuses new plain-file stores (maintenance mode); any store error reads the same way
    _fake_mlflow(monkeypatch, RuntimeError("the file store backend is in maintenance mode\nmore detail"))
    with pytest.raises(ConfigError, match=r"MLflow cannot track to tracking.mlflow_uri 'file:///x/mlruns' \(RuntimeError: "
                                          r"the file store backend is in maintenance mode\)"):
        Tracker.open(TrackingConfig(mlflow=True, mlflow_uri="file:///x/mlruns"), tmp_path)


def test_an_unreachable_mlflow_server_is_reported_before_mlflow_retries(tmp_path, monkeypatch):
    fake = _fake_mlflow(monkeypatch)
    port = _closed_loopback_port()
    uri = f"http://kd:hunter2@127.0.0.1:{port}"
    with pytest.raises(ConfigError, match=f"Cannot reach the MLflow server .*127.0.0.1:{port}") as info:
        Tracker.open(TrackingConfig(mlflow=True, mlflow_uri=uri), tmp_path)
    assert "hunter2" not in str(info.value) and "kd:***@" in str(info.value)
    assert fake.opened == []  # refused before MLflow's client (and its minutes of retries) ever ran
    with pytest.raises(ConfigError, match="not a valid URI"):
        Tracker.open(TrackingConfig(mlflow=True, mlflow_uri="http://127.0.0.1:port"), tmp_path)
    from kdistill.cli.main import main

    config = tmp_path / "cfg.yaml"
    config.write_text("data: {dataset: digits, limit_train: 64, limit_test: 16}\nstudent: {model: mlp-simple}\n"
                      f"train: {{epochs: 1, progress: false}}\noutput_dir: {tmp_path / 'runs'}\n"
                      f"tracking: {{mlflow: true, mlflow_uri: 'http://127.0.0.1:{port}'}}\n")
    assert main(["train", str(config), "--role", "student"]) == 2
