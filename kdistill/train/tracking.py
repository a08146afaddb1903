"""Experiment tracking: TensorBoard and MLflow, one experiment per ``kdistill`` invocation; ``history.csv`` always.

Which writers run is the config's ``tracking`` section
(:class:`~kdistill.config.TrackingConfig`)::

    tracking: {tensorboard: true, mlflow: false, dir: null}

A ``kdistill train`` or ``distill`` command is one :class:`Experiment`
(opened by :func:`tracked`): one MLflow parent run named ``COMMAND NAME``
holding the resolved config (params and a ``config.yaml`` artifact), with one
nested run per trained model, named by its role (``teacher``, ``student``;
``student-2``... when a scheme trains several); and one TensorBoard root,
``DIR/tensorboard``, with a folder per role. Each nested run gets the
per-epoch numbers of its ``fit`` (``loss`` and the named loss terms, ``lr``,
``val_score``, ``seconds``, the epoch as step), then the final test metrics
as ``test/NAME`` (accuracy, and for a distilled student its ``agreement`` and
``kl`` to the teacher), and with MLflow the exported model
(``model/model.safetensors``); the parent repeats the final metrics as
``ROLE/test/NAME``.

* TensorBoard: event files written by ``torch.utils.tensorboard.SummaryWriter``
  (needs ``pip install 'kdistill[tracking]'``) under ``dir`` or the output
  folder; ``tensorboard --logdir OUTPUT/tensorboard`` shows every role.
* MLflow: through ``mlflow.MlflowClient`` (needs ``pip install 'kdistill[mlflow]'``),
  in ``tracking.mlflow_uri`` or a local SQLite store ``mlflow.db`` in ``dir``
  or the output folder, its artifacts in ``mlartifacts/`` beside it
  (``mlflow ui --backend-store-uri sqlite:///OUTPUT/mlflow.db`` shows it).

A store MLflow refuses or cannot reach (e.g. a ``file://`` URI, which MLflow 3
no longer accepts for new stores) or a folder TensorBoard cannot create is a
:class:`~kdistill.errors.ConfigError`, raised before anything trains. A
Python ``fit`` outside :func:`tracked` reports to writers of its own.

:func:`write_history_csv` writes the epoch records as ``history.csv`` beside
the checkpoints, rewritten atomically after every epoch, whatever the switches.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from kdistill.config import TrackingConfig
from kdistill.errors import ConfigError, shorten
from kdistill.io import ensure_writable_dir
from kdistill.train.checkpoint import atomic_write_text

# seconds to wait for an MLflow server to accept a connection before the run starts
CONNECT_TIMEOUT = 5.0

__all__ = ["Experiment", "Tracker", "active_experiment", "check_mlflow_server", "flatten_params", "tracked",
           "write_history_csv"]


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
    text = str(error).strip()
    return shorten(text.splitlines()[0], 300) if text else type(error).__name__


def _mlflow_failure(uri: str, given: bool, error: BaseException) -> ConfigError:
    where = f"tracking.mlflow_uri '{_shown_uri(uri)}'" if given else f"the local store '{shorten(uri, 200)}'"
    return ConfigError(
        f"MLflow cannot track to {where} ({type(error).__name__}: {_first_line(error)}). Use a "
        "database URI such as sqlite:///PATH/mlflow.db or a tracking server's http(s):// address, or "
        "leave tracking.mlflow_uri unset for OUTPUT/mlflow.db; or set tracking.mlflow: false.")


def _tensorboard_writer(writer_cls: Any, folder: Path) -> Any:
    try:
        return writer_cls(log_dir=str(folder))
    except OSError as error:
        raise ConfigError(f"TensorBoard cannot write to '{shorten(folder, 200)}' ({_first_line(error)}); "
                          "set tracking.dir (or output_dir) to a folder you can write, or set "
                          "tracking.tensorboard: false.") from None


def _log_params(client: Any, run_id: str, flat: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
        client.log_batch(run_id, params=items[i:i + 100])


class Experiment:
    """One tracked ``kdistill`` invocation: a parent MLflow run and one TensorBoard root.

    Every ``fit`` while it is active (see :func:`tracked`) reports to a
    :class:`Tracker` of its own, nested under it: an MLflow run tagged with
    the parent's id and named after the model's role (``teacher``,
    ``student``; ``student-2``... when a scheme trains several), and the
    TensorBoard folder ``ROOT/tensorboard/ROLE``. The invocation's settings
    are the parent's params and its ``config.yaml`` artifact; results go to
    the parent and to the role's run (:meth:`log_results`), deployable model
    files to the role's run (:meth:`log_artifact`).
    """

    def __init__(self, cfg: TrackingConfig, base: Path | None) -> None:
        self.cfg = cfg
        self.base = base
        self.client: Any = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.trackers: dict[str, Tracker] = {}
        self.closed = False

    @classmethod
    def start(cls, cfg: TrackingConfig | None, out_dir: str | Path | None, *, name: str,
              params: Mapping[str, Any] | None = None, config_text: str | None = None) -> Experiment:
        """Open the parent run (MLflow) and the TensorBoard root that ``cfg`` switches on.

        Files go under ``cfg.dir`` or, without it, ``out_dir``. Raises
        :class:`ConfigError` for a library that is not installed, a store that
        MLflow refuses or cannot reach, or a folder that cannot be written.
        """
        cfg = cfg or TrackingConfig()
        base = Path(cfg.dir) if cfg.dir else (Path(out_dir) if out_dir is not None else None)
        experiment = cls(cfg, base)
        if not (cfg.tensorboard or cfg.mlflow):
            return experiment
        if base is None and (cfg.tensorboard or not cfg.mlflow_uri):
            raise ConfigError("Tracking is on but there is no folder to write to: set tracking.dir "
                              "(or output_dir).")
        if base is not None and (cfg.tensorboard or not cfg.mlflow_uri):
            ensure_writable_dir(base, "tracking folder")  # e.g. tracking.dir: /proc/tb, a file, read-only
        if cfg.tensorboard:
            _require("tensorboard", "tracking", "tensorboard")
        if cfg.mlflow:
            experiment._start_mlflow(name, flatten_params(params or {}), config_text)
        return experiment

    def _start_mlflow(self, name: str, flat: dict[str, str], config_text: str | None) -> None:
        mlflow = _require("mlflow", "mlflow", "mlflow")
        cfg, base = self.cfg, self.base
        local = cfg.mlflow_uri is None
        # MLflow 3 refuses new plain-file stores; a SQLite file is its local default
        uri = cfg.mlflow_uri or f"sqlite:///{(base / 'mlflow.db').resolve()}"  # type: ignore[operator]
        check_mlflow_server(uri)  # MLflow itself retries an unreachable server for minutes
        try:
            if local:
                base.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            client = mlflow.MlflowClient(tracking_uri=uri)
            experiment_name = cfg.experiment or "kdistill"
            found = client.get_experiment_by_name(experiment_name)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                # a local store keeps its artifacts beside it, not in ./mlruns of wherever kdistill ran
                artifacts = (base / "mlartifacts").resolve().as_uri() if local else None  # type: ignore[union-attr]
                experiment_id = client.create_experiment(experiment_name, artifact_location=artifacts)
            run = client.create_run(experiment_id, run_name=name)
        except ConfigError:
            raise
        except Exception as error:  # MlflowException, a database or network error: the setting is wrong
            raise _mlflow_failure(uri, not local, error) from None
        self.client, self.experiment_id, self.run_id = client, experiment_id, run.info.run_id
        _log_params(client, self.run_id, flat)
        if config_text is not None:
            client.log_text(self.run_id, config_text, "config.yaml")

    @property
    def active(self) -> bool:
        return self.run_id is not None or self.cfg.tensorboard

    @property
    def keeps_artifacts(self) -> bool:
        """Whether :meth:`log_artifact` stores files (only MLflow runs hold artifacts)."""
        return self.run_id is not None

    def tracker(self, role: str, params: Mapping[str, Any] | None = None) -> Tracker:
        """The nested writers of one ``fit``: ``role``, or ``role-2``... if that name is taken."""
        name, n = role, 1
        while name in self.trackers:
            n += 1
            name = f"{role}-{n}"
        run_id = None
        if self.run_id is not None:
            run = self.client.create_run(self.experiment_id, run_name=name,
                                         tags={"mlflow.parentRunId": self.run_id, "kdistill.role": role})
            run_id = run.info.run_id
        tracker = self._writers(name, params, run_id)
        tracker.owner = self
        self.trackers[name] = tracker
        return tracker

    def _writers(self, name: str, params: Mapping[str, Any] | None, run_id: str | None) -> Tracker:
        """A tracker writing to ``ROOT/tensorboard/NAME`` and the MLflow run ``run_id``."""
        tracker = Tracker()
        tracker.name = name
        flat = flatten_params(params or {})
        if self.cfg.tensorboard:
            assert self.base is not None
            writer_cls = _require("tensorboard", "tracking", "tensorboard")
            tracker.tensorboard = _tensorboard_writer(writer_cls, self.base / "tensorboard" / name)
            tracker.log_params_text(flat)
        if run_id is not None:
            tracker.mlflow, tracker.mlflow_run = self.client, run_id
            _log_params(self.client, run_id, flat)
        return tracker

    def latest(self, role: str) -> Tracker | None:
        """The tracker most recently opened for ``role``."""
        found = [t for name, t in self.trackers.items() if name == role or name.startswith(f"{role}-")]
        return found[-1] if found else None

    def log_results(self, role: str, metrics: Mapping[str, Any]) -> None:
        """Final test metrics of ``role``'s model: ``test/NAME`` in its run, ``ROLE/test/NAME`` in the parent."""
        values = _numbers(metrics)
        tracker = self.latest(role)
        if tracker is not None:
            tracker.log_final(values)
            role = tracker.name
        if self.run_id is not None and values:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(f"{role}/test/{k}", v, now, 0)
                                                        for k, v in values.items()])

    def log_artifact(self, role: str, path: str | Path, folder: str = "model") -> None:
        """A file (e.g. the exported model) as an artifact of ``role``'s MLflow run."""
        tracker = self.latest(role)
        if self.run_id is None or tracker is None or tracker.mlflow_run is None:
            return
        self.client.log_artifact(tracker.mlflow_run, str(path), folder)

    def close(self, status: str = "FINISHED") -> None:
        """Close every nested writer and end the parent run with ``status``."""
        if self.closed:
            return
        self.closed = True
        for tracker in self.trackers.values():
            tracker.finish(status)
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


_ACTIVE: ContextVar[Experiment | None] = ContextVar("kdistill_experiment", default=None)


def active_experiment() -> Experiment | None:
    """The experiment of the current :func:`tracked` block, or ``None``."""
    return _ACTIVE.get()


@contextmanager
def tracked(cfg: TrackingConfig | None, out_dir: str | Path | None, *, name: str,
            params: Mapping[str, Any] | None = None, config_text: str | None = None) -> Iterator[Experiment]:
    """Track everything inside the block as one experiment (see :class:`Experiment`).

    The parent run ends ``FINISHED``, or ``FAILED`` when the block raises.
    """
    experiment = Experiment.start(cfg, out_dir, name=name, params=params, config_text=config_text)
    token = _ACTIVE.set(experiment)
    try:
        yield experiment
    except BaseException:
        experiment.close("FAILED")
        raise
    finally:
        _ACTIVE.reset(token)
    experiment.close("FINISHED")


class Tracker:
    """The writers one ``fit`` reports to; build it with :meth:`open`."""

    def __init__(self) -> None:
        self.tensorboard: Any = None
        self.mlflow: Any = None
        self.mlflow_run: str | None = None
        self.name = "train"
        self.owner: Experiment | None = None
        self.closed = False
        self.finished = False

    @classmethod
    def open(cls, cfg: TrackingConfig | None, out_dir: str | Path | None = None, *,
             run_name: str = "train", params: Mapping[str, Any] | None = None) -> Tracker:
        """Start the writers ``cfg`` switches on and log ``params`` once.

        Inside a :func:`tracked` block the writers are nested in its
        experiment, named ``run_name`` (the role). Outside one, files go under
        ``cfg.dir`` or, without it, under ``out_dir`` (``tensorboard/RUN_NAME/``,
        ``mlflow.db``), as a run of its own. Raises :class:`ConfigError` when a
        switched-on library is not installed, or when there is nowhere to write.
        """
        experiment = active_experiment()
        if experiment is not None:
            return experiment.tracker(run_name, params) if experiment.active else cls()
        if cfg is None or not (cfg.tensorboard or cfg.mlflow):
            return cls()
        # a fit of its own: its run is the experiment's one run, ended with the fit
        experiment = Experiment.start(cfg, out_dir, name=run_name)
        return experiment._writers(run_name.replace(" ", "-"), params, experiment.run_id)

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

    def log_params_text(self, flat: Mapping[str, str]) -> None:
        if self.tensorboard is not None and flat:
            table = "\n".join(f"| {k} | {v} |" for k, v in sorted(flat.items()))
            self.tensorboard.add_text("params", "| setting | value |\n|---|---|\n" + table, 0)

    def log_epoch(self, epoch: int, record: Mapping[str, Any]) -> None:
        """Log the numbers of one epoch's record with ``epoch`` as the step."""
        self._log(_numbers(record), epoch)

    def log_final(self, values: Mapping[str, float]) -> None:
        """The trained model's test metrics, as ``test/NAME`` at step 0."""
        self._log({f"test/{k}": v for k, v in values.items()}, 0)

    def _log(self, values: Mapping[str, float], step: int) -> None:
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.mlflow is not None and values:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(self.mlflow_run, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self, status: str = "FINISHED") -> None:
        """End of ``fit``: flush; a tracker of an experiment stays open for the results, else it is finished."""
        if self.closed:
            return
        self.closed = True
        if self.tensorboard is not None:
            self.tensorboard.flush()
        if self.owner is None or status != "FINISHED":
            self.finish(status)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the writers (``status`` ``FAILED`` marks an MLflow run that raised)."""
        if self.finished:
            return
        self.finished = True
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            self.mlflow.set_terminated(self.mlflow_run, status=status)
