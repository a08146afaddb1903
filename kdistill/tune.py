"""Hyperparameter search with Optuna: temperature, alpha, learning rate, method weights.

``run_tune(cfg, trials=20)`` trains one student per trial with values drawn
by Optuna's TPE sampler (Bergstra et al. 2011) and maximises the best
validation score of the trial (accuracy on the held-out ``train.val_fraction``;
the test set is never looked at). After every epoch the trial reports its
validation score and Optuna's median rule stops trials that fall below the
median of earlier trials at the same epoch (``tune.pruner: median``).

The study lives in an Optuna storage: by default a SQLite file
``<out_dir>/tune.db``, so stopping a search (Ctrl-C, a killed job) and running
the same command again resumes it; the trials already finished count towards
``trials``. An RDB URL (``postgresql://user@host/db``) lets several machines
work on one study: each runs the same command and the study stops once
``trials`` trials have finished in total.

The teacher is trained (or loaded) once and shared by every trial. The search
space is the ``tune.search`` section of the config (dotted config keys; plain
data, never code); without it, :func:`default_search` is used.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdistill.config import MAX_LR, ExperimentConfig, SearchParam, dump_config, parse_config
from kdistill.data import DataSplits
from kdistill.distiller import term_class
from kdistill.errors import ConfigError, KDistillError, TrainingError
from kdistill.experiment import build_run, execute, get_teacher, load_data
from kdistill.experiment.runs import overwriting
from kdistill.experiment.validate import meta_model, validate_experiment, validate_output_dir
from kdistill.schemes import scheme_names
from kdistill.train.checkpoint import atomic_write_bytes, atomic_write_text
from kdistill.train.lock import folder_lock
from kdistill.train.tracking import Tracker

log = logging.getLogger("kdistill")

FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class TuneResult:
    """The best trial, where its config and the plots went, and the Optuna study."""

    best_params: dict[str, Any]
    best_value: float
    best_config: ExperimentConfig
    best_config_path: Path
    out_dir: Path
    storage: str
    study_name: str
    finished_trials: int
    plots: list[Path] = field(default_factory=list)
    study: Any = None


class _QuietUserErrors(logging.Filter):
    """Drop Optuna's report of a trial that failed with a :class:`KDistillError`.

    Optuna logs such a trial with its traceback (and then "failed with value
    None") before it re-raises the error; kdistill then reports the same error
    as one paragraph, which is all a user mistake should print.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dropped = False

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KDistillError):
            self.dropped = True
            return False
        if self.dropped and "failed with value" in record.getMessage():
            self.dropped = False
            return False
        return True


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("kdistill tune needs Optuna: pip install 'kdistill[tune]'.") from None
    return optuna


def _method_entries(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in cfg.distill.method_list()]


def _alpha_unset_and_replaced(cfg: ExperimentConfig) -> bool:
    """True when a listed method replaces a built-in term and ``distill.alpha`` is not set (so it must stay unset)."""
    d = cfg.distill
    return (not d.terms and "alpha" not in d.model_fields_set
            and any(term_class(m.name).replaces for m in d.method_list()))


def normalised_dump(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as plain data, with the ``method`` shorthand spelt out as ``methods``.

    Method weights then have stable keys ``distill.methods.<i>.weight`` (with
    ``distill.terms``: ``distill.terms.<i>.weight``). An unset ``alpha`` beside
    a method that replaces the kd term stays unset, so the trials train the
    same terms as the config.
    """
    data = cfg.model_dump(mode="json")
    if cfg.teacher is not None and not cfg.distill.terms:
        data["distill"]["methods"] = _method_entries(cfg)
        data["distill"]["method"] = "kd"
    if cfg.distill.terms or _alpha_unset_and_replaced(cfg):
        del data["distill"]["alpha"]
    return data


def default_search(cfg: ExperimentConfig) -> dict[str, SearchParam]:
    """Temperature log-uniform in [1, 20], alpha in [0, 1], lr log-uniform around the configured
    one (/10 .. x10, at most MAX_LR), and each extra method's weight log-uniform in [0.01, 100] x its configured weight.
    A config without a teacher searches the learning rate only."""
    lr = cfg.train.optimizer.lr
    # never above the largest rate a config accepts (MAX_LR), or every trial's config would be refused
    search = {"train.optimizer.lr": SearchParam(low=lr / 10, high=min(lr * 10, MAX_LR), log=True)}
    if cfg.teacher is None:
        return search
    search["distill.temperature"] = SearchParam(low=1.0, high=20.0, log=True)
    if cfg.distill.terms:  # the whole loss listed: each term's weight, around the configured one
        for i, term in enumerate(cfg.distill.terms):
            weight = term.weight or 1.0
            search[f"distill.terms.{i}.weight"] = SearchParam(low=weight / 100, high=weight * 100, log=True)
        return search
    if not _alpha_unset_and_replaced(cfg):
        search["distill.alpha"] = SearchParam(low=0.0, high=1.0)
    for i, method in enumerate(_method_entries(cfg)):
        weight = method["weight"] or 1.0
        search[f"distill.methods.{i}.weight"] = SearchParam(low=weight / 100, high=weight * 100, log=True)
    return search


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``value`` at a dotted ``key`` that must already exist in ``data`` (list items by index)."""
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, dict) and part in node:
            if last:
                node[part] = value
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            if last:
                node[int(part)] = value
            node = node[int(part)]
        else:
            raise ConfigError(
                f"tune.search key '{key}' does not name a value of this config (stuck at "
                f"'{part}'); use dotted keys such as distill.temperature, train.optimizer.lr or "
                "distill.methods.0.weight.")


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> ExperimentConfig:
    """A validated config: ``base`` (plain data) with each dotted key set to its value."""
    data = json.loads(json.dumps(base))  # a deep copy of plain data
    for key, value in params.items():
        _set_path(data, key, value)
    return parse_config(data, source="(tune trial)")


def _suggest(trial: Any, key: str, spec: SearchParam) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(key, spec.choices)
    if spec.integer:
        return trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, log=spec.log)


def _study_storage(storage: str | None, out: Path) -> tuple[Any, str]:
    optuna = _optuna()
    url = storage or f"sqlite:///{(out / 'tune.db').resolve()}"
    for attempt in range(3):
        try:
            # the heartbeat lets a later run mark trials of a killed worker as failed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180), url
        except Exception as error:
            # machines creating one shared database at once race on its schema: the loser retries
            if type(error).__name__ != "IntegrityError" or attempt == 2:
                raise _storage_error(url, error) from None
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _storage_error(url: str, error: Exception) -> ConfigError:
    if isinstance(error, ImportError):
        return ConfigError(f"Optuna storage '{_hide_password(url)}' needs a database driver: {error}.")
    # SQLAlchemy raises many kinds for a bad URL or an unreachable server
    return ConfigError(f"Cannot open Optuna storage '{_hide_password(url)}': {error}")


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _count_finished(study: Any) -> int:
    optuna = _optuna()
    states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
    return len(study.get_trials(deepcopy=False, states=states))


def _get_teacher(cfg: ExperimentConfig, data: DataSplits, out: Path):
    """The search's one teacher: trained (or loaded) once, shared by every trial and every process.

    A teacher an earlier or concurrent run of this search left in
    ``out/teacher`` is reused only once it has finished; an unfinished one
    (the search was killed while it trained) is resumed. Processes sharing
    the folder take turns: the second waits for the first one's teacher.
    """
    if cfg.teacher is None:
        return None
    if cfg.teacher.checkpoint:
        return get_teacher(cfg, data, out)
    folder = out / "teacher"
    with folder_lock(folder, "training the search's teacher", wait=True):
        return get_teacher(cfg, data, out)  # reuses a finished teacher, resumes an unfinished one


def run_tune(
    cfg: ExperimentConfig,
    trials: int,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    out_dir: str | Path | None = None,
    timeout: float | None = None,
    data: DataSplits | None = None,
    overwrite: bool = False,
) -> TuneResult:
    """Search the config's hyperparameters until ``trials`` trials have finished in the study.

    Writes ``best.yaml`` (the config with the best values, ready for
    ``kdistill distill``), ``tune.json`` (a summary) and the plots
    ``history.png`` and ``importance.png`` into ``out_dir`` (default
    ``<output_dir>/tune``). The search's teacher in ``out_dir/teacher`` is
    reused or resumed like a distillation run's; one trained there with other
    settings is replaced only with ``overwrite`` (:mod:`kdistill.experiment.runs`).
    """
    optuna = _optuna()
    # Optuna's per-trial lines only with --verbose (the root level), like kdistill's own progress log
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}.")
    if cfg.student is None:
        raise ConfigError("Tuning needs a 'student' section with at least 'model: NAME'.")
    _refuse_scheme(cfg)
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir() / "tune"
    validate_output_dir(out)
    search = cfg.tune.search or default_search(cfg)
    base = normalised_dump(cfg)
    apply_params(base, {key: _midpoint(spec) for key, spec in search.items()})  # bad keys fail now
    data = data if data is not None else load_data(cfg)
    if cfg.teacher is not None:  # everything checkable is checked before the teacher trains
        validate_experiment(cfg, data)
    else:
        meta_model(cfg.student, data, "student")
    out.mkdir(parents=True, exist_ok=True)
    with overwriting(overwrite):
        teacher = _get_teacher(cfg, data, out)

    name = study_name or cfg.name
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=cfg.tune.startup_trials,
                                          n_warmup_steps=cfg.tune.warmup_epochs)
              if cfg.tune.pruner == "median" else optuna.pruners.NopPruner())
    # processes sharing the folder create the storage and the study one at a time
    with folder_lock(out, "opening the search's storage", wait=True):
        rdb, url = _study_storage(storage, out)
        study = optuna.create_study(storage=rdb, study_name=name, direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed), pruner=pruner)
        # a seeded sampler restarts its random draws on every call: a resumed (or second) worker
        # would try the first trials' values again, so its seed moves on by the trials already there
        study.sampler = optuna.samplers.TPESampler(seed=cfg.tune.seed + len(study.get_trials(deepcopy=False)))

    if cfg.tracking.tensorboard or cfg.tracking.mlflow:
        log.warning("tracking: every trial is tracked as its own run, named '%s-trial-N' (%s)", name,
                    _tracking_places(cfg, out))

    def objective(trial: Any) -> float:
        params = {key: _suggest(trial, key, spec) for key, spec in search.items()}
        trial_cfg = apply_params(base, params)
        trial_cfg.train.progress = False
        # the same run as `kdistill distill` builds (seeded student, augmentation, teacher cache,
        # regression objective), only written nowhere: every trial starts from the same weights
        run = build_run(trial_cfg, "student" if teacher is None else "distill", data=data, teacher=teacher,
                        out_dir=None)
        tracker = Tracker.open(trial_cfg.tracking, out, run_name=f"{name}-trial-{trial.number}",
                               params={"trial": trial.number, **normalised_dump(trial_cfg)})

        def report(epoch: int, record: dict[str, float]) -> None:
            trial.report(record["val_score"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val_score {record['val_score']:.4f} below the median at epoch {epoch}")

        try:
            result = execute(run, on_epoch_end=report, evaluate=False, tracker=tracker)
        except TrainingError as error:
            # a diverging learning rate is an outcome of the search, not a user mistake
            trial.set_user_attr("diverged", str(error))
            raise optuna.TrialPruned("the loss became NaN, infinite or diverged") from None
        finally:
            tracker.close("FAILED")  # a no-op once training closed it; else it stopped before training
        return result.best_score

    remaining = trials - _count_finished(study)
    if remaining > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            stop = optuna.study.MaxTrialsCallback(
                trials, states=tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED))
        optimize_log = logging.getLogger("optuna.study._optimize")
        quiet = _QuietUserErrors()
        optimize_log.addFilter(quiet)
        try:
            study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[stop])
        finally:
            optimize_log.removeFilter(quiet)
    else:
        log.info("study '%s' already has %d finished trials", name, trials)
    with folder_lock(out, "writing the search's results", wait=True):
        return _write_results(study, base, out, url, name)


def _refuse_scheme(cfg: ExperimentConfig) -> None:
    """A search tunes one distillation run; a scheme (several runs) is not what a trial trains."""

    scheme = cfg.distill.scheme.name if cfg.distill.scheme is not None else None
    if scheme is None and cfg.distill.method in scheme_names():
        scheme = cfg.distill.method
    if scheme is not None:
        raise ConfigError(
            f"kdistill tune searches the settings of one distillation run, but the config names the scheme "
            f"'{scheme}' (several runs), which a trial would not run. Remove distill.scheme (or set "
            "distill.method to a loss method such as kd) to tune the one run, then use the best values in "
            "the scheme's config.")


def _tracking_places(cfg: ExperimentConfig, out: Path) -> str:
    base = Path(cfg.tracking.dir) if cfg.tracking.dir else out
    places = []
    if cfg.tracking.tensorboard:
        places.append(f"TensorBoard under {base / 'tensorboard'}")
    if cfg.tracking.mlflow:
        places.append(f"MLflow at {cfg.tracking.mlflow_uri or base / 'mlflow.db'}")
    return ", ".join(places)


def _midpoint(spec: SearchParam) -> Any:
    if spec.choices is not None:
        return spec.choices[0]
    value = (spec.low + spec.high) / 2
    return int(value) if spec.integer else value


def _write_results(study: Any, base: dict[str, Any], out: Path, url: str, name: str) -> TuneResult:
    optuna = _optuna()
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise TrainingError(
            f"No trial of study '{name}' completed (all were pruned, diverged or failed), so there "
            "is no best config yet. Widen or lower the learning-rate range, or run more trials.")
    best = study.best_trial
    best_cfg = apply_params(base, best.params)
    best_path = out / "best.yaml"
    atomic_write_text(best_path, dump_config(best_cfg))
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    summary = {"study_name": name, "storage": _hide_password(url), "best_trial": best.number,
               "best_value": best.value, "best_params": best.params, "trials": states}
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=2))
    plots = _write_plots(study, out)
    return TuneResult(best_params=dict(best.params), best_value=float(best.value), best_config=best_cfg,
                      best_config_path=best_path, out_dir=out, storage=_hide_password(url),
                      study_name=name, finished_trials=_count_finished(study), plots=plots, study=study)


def _write_plots(study: Any, out: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNG (importances need 2+ trials)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = []
    for filename, plot in (("history.png", ovm.plot_optimization_history),
                           ("importance.png", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(7, 4.5)
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=110)
            plt.close(figure)
        except (RuntimeError, ValueError, ZeroDivisionError) as error:
            # parameter importance is undefined with fewer than two completed trials
            log.warning("could not draw %s: %s", filename, error)
            continue
        atomic_write_bytes(out / filename, buffer.getvalue())
        written.append(out / filename)
    return written

