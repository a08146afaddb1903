"""Experiment tracking: per-epoch metrics to TensorBoard and MLflow, and ``history.csv`` always.

``fit`` calls a :class:`Tracker` after every epoch record, with the record's
numbers (``loss`` and the named loss terms, ``lr``, ``val_score``,
``seconds``). Which writers run is the config's ``tracking`` section
(:class:`~kdistill.config.TrackingConfig`)::

    tracking: {tensorboard: true, mlflow: false, dir: null}

* TensorBoard: event files written by ``torch.utils.tensorboard.SummaryWriter``
  (needs ``pip install 'kdistill[tracking]'``) under ``dir`` or
  ``OUTPUT/tensorboard``; the run's settings are logged once as text.
  ``tensorboard --logdir OUTPUT/tensorboard`` shows them.
* MLflow: one run per ``fit`` through ``mlflow.MlflowClient`` (needs
  ``pip install 'kdistill[mlflow]'``), in ``tracking.mlflow_uri`` or a local
  SQLite store ``mlflow.db`` in ``dir`` or ``OUTPUT`` (``mlflow ui
  --backend-store-uri sqlite:///OUTPUT/mlflow.db`` shows it); settings as
  params (once), metrics with the epoch as step.

:func:`write_history_csv` writes the same records as ``history.csv`` beside
the checkpoints, rewritten atomically after every epoch, whatever the switches.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdistill.config import TrackingConfig
from kdistill.errors import ConfigError, shorten
from kdistill.io import ensure_writable_dir, output_error
from kdistill.train.checkpoint import atomic_write_text

# seconds to wait for an MLflow server to accept a connection before the run starts
CONNECT_TIMEOUT = 5.0

__all__ = ["Tracker", "flatten_params", "write_history_csv"]


def write_history_csv(path: str | Path, records: list[dict[str, float]]) -> Path:
    """``records`` (one dict per epoch) as CSV, columns in order of first appearance, atomically."""
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(Path(path), buffer.getvalue())
    return Path(path)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``{"train.optimizer.lr": "0.001", ...}`` (what MLflow params are)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return flat


def _numbers(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)}


def _require(module: str, extra: str, switch: str) -> Any:
    try:
        if module == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter
        import mlflow

        return mlflow
    except ImportError as error:
        raise ConfigError(f"tracking.{switch} is on but {module} is not installed ({error}); install "
                          f"it with: pip install 'kdistill[{extra}]', or set tracking.{switch}: false."
                          ) from None


def _shown_uri(uri: str) -> str:
    """``uri`` without a password (``http://user:secret@host`` -> ``http://user:***@host``)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return shorten(uri, 200)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return shorten(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), 200)


def check_mlflow_server(uri: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """For an ``http(s)://`` tracking URI, prove the server accepts a connection within ``timeout``.

    MLflow's own client retries an unreachable server for minutes before it
    raises; this check fails in seconds, before training starts, with a
    :class:`ConfigError` naming the URI (without its password).
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError as error:  # a port that is not a number, an unbalanced [ in the host
        raise ConfigError(f"tracking.mlflow_uri {_shown_uri(uri)!r} is not a valid URI ({error}).") from None
    if parts.scheme not in ("http", "https"):
        return
    if not host:
        raise ConfigError(f"tracking.mlflow_uri {_shown_uri(uri)!r} names no server; write it as "
                          "http://HOST:PORT.")
    try:
        with socket.create_connection((host, port or (443 if parts.scheme == "https" else 80)), timeout=timeout):
            pass
    except OSError as error:
        reason = f"no answer within {timeout:g} s" if isinstance(error, TimeoutError) else (
            error.strerror or type(error).__name__)
        raise ConfigError(f"Cannot reach the MLflow server of tracking.mlflow_uri {_shown_uri(uri)!r}: "
                          f"{reason}. Start the server (mlflow server --port PORT), fix the URI, or set "
                          "tracking.mlflow: false.") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return shorten(lines[0], 200) if lines else type(error).__name__


class Tracker:
    """The writers one ``fit`` reports to; build it with :meth:`open`."""

    def __init__(self) -> None:
        self.tensorboard: Any = None
        self.mlflow: Any = None
        self.mlflow_run: str | None = None
        self.closed = False

    @classmethod
    def open(cls, cfg: TrackingConfig | None, out_dir: str | Path | None = None, *,
             run_name: str = "train", params: Mapping[str, Any] | None = None) -> Tracker:
        """Start the writers ``cfg`` switches on and log ``params`` once.

        Files go under ``cfg.dir`` or, without it, under ``out_dir``
        (``tensorboard/RUN_NAME/``, ``mlflow.db``). Raises :class:`ConfigError` when a
        switched-on library is not installed, or when there is nowhere to write.
        """
        tracker = cls()
        if cfg is None or not (cfg.tensorboard or cfg.mlflow):
            return tracker
        base = Path(cfg.dir) if cfg.dir else (Path(out_dir) if out_dir is not None else None)
        if base is None and (cfg.tensorboard or not cfg.mlflow_uri):
            raise ConfigError("Tracking is on but there is no folder to write to: set tracking.dir "
                              "(or output_dir).")
        if base is not None and (cfg.tensorboard or not cfg.mlflow_uri):
            ensure_writable_dir(base, "tracking folder")  # e.g. tracking.dir: /proc/tb, a file, read-only
        flat = flatten_params(params or {})
        if cfg.tensorboard:
            writer_cls = _require("tensorboard", "tracking", "tensorboard")
            assert base is not None
            log_dir = base / "tensorboard" / run_name.replace(" ", "-")
            try:
                tracker.tensorboard = writer_cls(log_dir=str(log_dir))
            except OSError as error:
                raise output_error(log_dir, "TensorBoard events", error) from None
            if flat:
                table = "\n".join(f"| {k} | {v} |" for k, v in sorted(flat.items()))
                tracker.tensorboard.add_text("params", "| setting | value |\n|---|---|\n" + table, 0)
        if cfg.mlflow:
            mlflow = _require("mlflow", "mlflow", "mlflow")
            # MLflow 3 refuses new plain-file stores; a SQLite file is its local default
            uri = cfg.mlflow_uri or f"sqlite:///{(base / 'mlflow.db').resolve()}"  # type: ignore[operator]
            check_mlflow_server(uri)
            try:
                tracker._start_mlflow(mlflow, uri, cfg.experiment or "kdistill", run_name, flat)
            except Exception as error:  # MLflow raises its own, SQLAlchemy's and OS errors for a bad store
                raise ConfigError(f"MLflow cannot use tracking URI {_shown_uri(uri)!r} "
                                  f"({type(error).__name__}: {_first_line(error)}). Fix tracking.mlflow_uri "
                                  "(e.g. sqlite:///PATH/mlflow.db or http://HOST:PORT), or set "
                                  "tracking.mlflow: false.") from None
        return tracker

    def _start_mlflow(self, mlflow: Any, uri: str, name: str, run_name: str, flat: dict[str, str]) -> None:
        client = mlflow.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else client.create_experiment(name)
        run = client.create_run(experiment, run_name=run_name)
        self.mlflow, self.mlflow_run = client, run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            client.log_batch(run.info.run_id, params=items[i:i + 100])

    @property
    def active(self) -> bool:
        return self.tensorboard is not None or self.mlflow is not None

    def log_epoch(self, epoch: int, record: Mapping[str, Any]) -> None:
        """Log the numbers of one epoch's record with ``epoch`` as the step."""
        values = _numbers(record)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, epoch)
            self.tensorboard.flush()
        if self.mlflow is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(self.mlflow_run, metrics=[Metric(k, v, now, epoch) for k, v in values.items()])

    def close(self, status: str = "FINISHED") -> None:
        """Flush and close the writers (``status`` ``FAILED`` marks an MLflow run that raised)."""
        if self.closed:
            return
        self.closed = True
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            self.mlflow.set_terminated(self.mlflow_run, status=status)
