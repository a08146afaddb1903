"""Train an assembled :class:`~kdistill.experiment.assembly.Run`, load its best epoch, score and record it.

:func:`execute` is where every command's training happens: the run folder is
locked, ``config.yaml`` and ``train.log`` written, :func:`kdistill.train.fit`
called, the best epoch reloaded and evaluated by
:func:`~kdistill.experiment.evaluation.score_model` (the evaluation ``kdistill
evaluate`` makes), and ``metrics.json`` written.
"""


import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from kdistill.compress.export import export_model
from kdistill.compress.variational import finish_variational
from kdistill.config import ExperimentConfig, TrainConfig
from kdistill.data import DataSplits
from kdistill.data.augment import build_batch_mix, build_transform
from kdistill.data.streaming import evaluation_batch_size
from kdistill.errors import ConfigError, KDistillError
from kdistill.experiment.assembly import DEFAULT_OUT, Run, build_run
from kdistill.experiment.evaluation import score_model
from kdistill.experiment.runs import recorded_run
from kdistill.train import fit, load_weights
from kdistill.train.checkpoint import atomic_write_text
from kdistill.train.distributed import is_main_process, on_main_process
from kdistill.train.lock import folder_lock
from kdistill.train.targets import fold
from kdistill.train.tracking import Experiment, Tracker, active_experiment, tracked

log = logging.getLogger("kdistill")


@dataclass
class RunResult:
    """A trained model, where it was saved, and its test metrics."""

    model: nn.Module
    metrics: dict[str, Any]
    checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    best_score: float = float("-inf")

def execute(
    run: Run,
    *,
    resume: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    evaluate: bool = True,
    tracker: Tracker | None = None,
) -> RunResult:
    """Train ``run``, load its best epoch, and (unless ``evaluate=False``) score it on the test split.

    The run folder is locked while training, so a second process writing the
    same folder is refused instead of interleaving checkpoints; it receives the
    resolved ``config.yaml`` and ``train.log`` (:mod:`kdistill.experiment.runs`). Epoch records go
    to ``tracker`` when one is given, else to the config's ``tracking`` writers
    in the run folder (a run written nowhere is tracked only through ``tracker``).
    """
    out = run.out_dir
    tracking = tracker if tracker is not None else run.cfg.tracking if out is not None else None
    writes = out is not None and is_main_process()
    with folder_lock(out, "training") if writes else _nothing(), \
            recorded_run(out, run.cfg, append=resume is not None) if writes else _nothing():
        history = fit(run.objective, run.data, run.train, out_dir=out, resume=resume,
                      augment_jitter=run.augment.jitter, augment_flip=run.augment.flip,
                      cache_teacher=run.cache, metadata=run.metadata, description=run.description,
                      on_epoch_end=on_epoch_end, tracker=tracking,
                      loader=run.cfg.data.loader, workers=run.cfg.data.workers,
                      transform=build_transform(run.augment.transforms, run.augment.timm, run.data.input_shape),
                      mix=build_batch_mix(run.augment.mix, run.data.num_classes))
        # [regression] fit leaves the last epoch in the data's units; checkpoints hold standardised weights
        scale = history.target_scale
        reloaded = load_best(run.model, history.best_path)
        metadata = dict(run.metadata, target_scale=scale.to_dict()) if scale is not None else run.metadata
        sparse = finish_variational(run.model, history.last_path, out, metadata)  # [variational]
        if sparse is not None:  # the last epoch, sparsified, saved as OUT/sparse.safetensors
            run.model = sparse.model
            reloaded = history.last_path is not None and Path(history.last_path).exists()
        if scale is not None and reloaded:
            fold(run.model, scale)  # predictions in the data's own units from here on
        metrics: dict[str, Any] = {}
        if evaluate:
            # the evaluation `kdistill evaluate` makes of the saved checkpoint; under torchrun rank 0 makes it
            # and the other ranks receive its metrics
            metrics = on_main_process(lambda: score_model(
                run.model, run.data, run.teacher, sparse=sparse is not None,
                sparse_file=sparse.path if sparse is not None else None,
                workers=run.cfg.data.workers, batch_size=evaluation_batch_size(run.train.batch_size)))
            if out is not None:
                write_metrics(out, metrics)
    best = sparse.path if sparse is not None else history.best_path
    if out is not None and is_main_process():
        track_result(run.role, metrics, best)
    return RunResult(run.model, metrics, best, history.epochs, history.seconds,
                     best_score=history.best_score)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def train_model(
    cfg: ExperimentConfig,
    role: str = "student",
    *,
    data: DataSplits | None = None,
    out_dir: str | Path | None | object = DEFAULT_OUT,
    resume: str | Path | None = None,
    train_cfg: TrainConfig | None = None,
) -> RunResult:
    """Train the config's ``teacher`` or ``student`` on labels alone (``out_dir``: its run folder)."""
    if role not in ("teacher", "student"):
        raise ConfigError(f"role must be 'teacher' or 'student', got {role!r}.")
    if train_cfg is not None:
        cfg = cfg.model_copy(deep=True)
        if role == "teacher":
            cfg.teacher_train = train_cfg
        else:
            cfg.train = train_cfg
    return execute(build_run(cfg, role, data=data, out_dir=out_dir), resume=resume)  # type: ignore[arg-type]

def load_best(model: nn.Module, best_path: Path | None) -> bool:
    """Load the best epoch's weights into ``model`` (eval mode); whether there was one to load."""
    loaded = best_path is not None and Path(best_path).exists()
    if loaded:
        load_weights(model, best_path)
    model.eval()
    return loaded


def track_result(role: str, metrics: dict[str, Any], best: Path | None) -> None:
    """The tracked experiment's record of a finished run: its test metrics and its exported model."""
    experiment = active_experiment()
    if experiment is None:
        return
    experiment.log_results(role, metrics)
    if best is not None and experiment.keeps_artifacts:
        with tempfile.TemporaryDirectory(prefix="kdistill-export-") as folder:
            try:
                exported = export_model(best, "safetensors", Path(folder) / "model.safetensors").path
            except (KDistillError, RuntimeError) as error:  # e.g. tied weights safetensors cannot store twice
                log.warning("the %s's model was not logged to MLflow: %s", role, error)
                return
            experiment.log_artifact(role, exported)


@contextmanager
def tracked_invocation(cfg: ExperimentConfig, command: str) -> Iterator[Experiment]:
    """Track one command on ``cfg`` as one experiment (see :class:`~kdistill.train.tracking.Experiment`).

    The parent run is named ``COMMAND NAME`` and holds the resolved config
    (as params and as ``config.yaml``); its files go under ``tracking.dir``
    or the config's output folder. Under ``torchrun`` only rank 0 tracks.
    """
    tracking = cfg.tracking if is_main_process() else None
    config = cfg.model_dump(mode="json")
    with tracked(tracking, cfg.resolved_output_dir(), name=f"{command} {cfg.name}", params=config,
                 config_text=yaml.safe_dump(config, sort_keys=False)) as experiment:
        yield experiment


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """Write ``out/metrics.json`` whole or not at all (rank 0 only)."""
    if not is_main_process():  # under torchrun only rank 0 writes results
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
