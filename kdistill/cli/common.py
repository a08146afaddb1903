"""Pieces shared by the CLI commands: config options, their scope, and logging.

Every command that reads an experiment file builds its config with
:func:`config_from_args`, so a flag means the same thing everywhere:

* ``--set KEY=VALUE`` sets one config value, read as YAML (``train.epochs=3``).
* ``--output-dir``, ``--data-dir`` and ``--teacher`` are paths, taken as
  written (never read as YAML: ``-o "runs/run #2"`` is that folder).
* ``--epochs`` sets the epochs of what the command trains: ``kdistill
  train`` the model it trains (the teacher's schedule, ``teacher_train``
  when the config has one), ``distill`` and ``tune`` the student
  (``train.epochs``); ``distill --teacher-epochs`` the teacher. Without a
  ``teacher_train`` section the teacher trains on ``train`` as well, so
  ``distill --epochs`` then sets its epochs too, and says so.
* ``--loader`` and ``--workers`` set ``data.loader`` and ``data.workers``.
* ``--seed``, ``--device`` and ``--no-progress`` apply to every schedule
  the command may run (``train`` and ``teacher_train``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from kdistill.config import ExperimentConfig, apply_overrides, dump_config, parse_config, read_yaml
from kdistill.errors import ConfigError

log = logging.getLogger("kdistill")


def path_argument(text: str) -> str:
    """An argparse ``type`` for paths: empty text (``-o ""``) is refused, not read as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty; give a file or folder")
    return text


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The config file and the options every config-reading command shares (see the module doc)."""
    trained = {"train": "the model this command trains", "distill": "the student (train.epochs)",
               "tune": "each trial's student (train.epochs)"}[command]
    parser.add_argument("config", help="YAML experiment file (see examples/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, read as YAML, e.g. --set train.epochs=3 (repeatable); "
                             "training features: train.accumulate=K (micro-batches per step), train.ema=0.999 "
                             "(moving average of the student), train.patience=N (early stopping), train.amp=fp16 "
                             "(CUDA), train.optimizer.decay_bias_and_norm=true, "
                             "data.augment.mix='{mixup_alpha: 0.8, cutmix_alpha: 1.0}' (Mixup/CutMix), "
                             "distill.cache_top_k=K (top-k teacher cache)")
    parser.add_argument("--output-dir", "-o", type=path_argument,
                        help="where checkpoints and results go (a path, taken as written)")
    parser.add_argument("--data-dir", type=path_argument,
                        help="folder holding the data set files (overrides data.data_dir)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto, for every schedule the command runs")
    parser.add_argument("--loader", choices=["auto", "memory", "stream"],
                        help="data.loader: memory (whole set on the device), stream (DataLoader workers read it "
                             "sample by sample: any size), auto (memory when it fits comfortably)")
    parser.add_argument("--workers", type=int, help="data.workers: DataLoader worker processes when streaming")
    parser.add_argument("--epochs", type=int, help=f"epochs of {trained}")
    if command != "tune":
        parser.add_argument("--seed", type=int, help="seed of every schedule the command runs "
                                                     "(train.seed and teacher_train.seed)")
        parser.add_argument("--resume", metavar="CHECKPOINT", type=path_argument,
                            help="continue from a last.safetensors checkpoint of the same run")
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace runs that earlier commands left in the output folder (kept otherwise: "
                             "a folder holding a run is refused)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (and the loss terms) and exit without training")
    if command == "distill":
        parser.add_argument("--teacher-epochs", type=int, help="epochs of the teacher, when it is trained here "
                                                               "(teacher_train.epochs)")


def config_from_args(args: argparse.Namespace, command: str) -> ExperimentConfig:
    """Read ``args.config``, apply ``--set`` and the flags with their documented scope, and validate."""
    path = Path(args.config)
    raw = apply_overrides(read_yaml(path), list(args.overrides))
    role = getattr(args, "role", "student") if command == "train" else "student"
    if command == "train" and role == "teacher" and isinstance(raw.get("teacher_train"), dict):
        _mirror_train_overrides(raw, args.overrides)
    if args.output_dir is not None:
        raw["output_dir"] = str(args.output_dir)
    if args.data_dir is not None:
        _section(raw, "data")["data_dir"] = str(args.data_dir)
    for flag in ("loader", "workers"):
        if getattr(args, flag, None) is not None:
            _section(raw, "data")[flag] = getattr(args, flag)
    if getattr(args, "teacher", None):
        _set_teacher_checkpoint(raw, str(args.teacher))
    if getattr(args, "method", None):
        _set_method(raw, args.method)

    every = ["train", "teacher_train"] if isinstance(raw.get("teacher_train"), dict) else ["train"]
    for flag, key in (("device", "device"), ("seed", "seed")):
        value = getattr(args, flag, None)
        if value is not None:
            for name in every:
                _section(raw, name)[key] = value
    if getattr(args, "no_progress", False):
        for name in every:
            _section(raw, name)["progress"] = False
    if args.epochs is not None:
        _section(raw, trained_schedule(raw, command, role))["epochs"] = args.epochs
        if command == "distill" and _trains_teacher_on_train(raw) and getattr(args, "teacher_epochs", None) is None:
            log.warning("--epochs %d sets train.epochs, which is also the teacher's schedule (the config has no "
                        "teacher_train section): a teacher trained by this run trains for %d epochs too; give "
                        "it its own with --teacher-epochs N", args.epochs, args.epochs)
    if getattr(args, "teacher_epochs", None) is not None:
        if not isinstance(raw.get("teacher_train"), dict):
            raw["teacher_train"] = dict(_section(raw, "train"))  # the teacher's own copy of the schedule
        raw["teacher_train"]["epochs"] = args.teacher_epochs
    return parse_config(raw, source=f"'{path}'")


def print_config(cfg: ExperimentConfig, command: str, role: str = "student") -> None:
    """``--print-config``: the resolved config as YAML, and as comments what the command's loss adds up."""
    print(dump_config(cfg), end="")
    print("\n".join(f"# {line}" for line in loss_terms(cfg, command, role)))


def loss_terms(cfg: ExperimentConfig, command: str, role: str = "student") -> list[str]:
    """What the model this command trains minimises, one line a term with its weight."""
    if command == "train":
        train = cfg.teacher_train if role == "teacher" and cfg.teacher_train is not None else cfg.train
        smoothing = train.label_smoothing
        return ["loss: cross-entropy with the labels (a regression set: MSE to the targets)"
                + (f", label smoothing {smoothing}" if smoothing else "")]
    d = cfg.distill
    lines = [f"loss of the distilled student (distill.alpha {d.alpha}, distill.temperature {d.temperature}):"]
    if d.alpha < 1:
        lines.append(f"  {1 - d.alpha:.4g} x student  cross-entropy with the labels (1 - alpha)")
    if d.alpha > 0:
        lines.append(f"  {d.alpha:.4g} x kd       T^2 x KL(softmax(teacher/T) || softmax(student/T)) (alpha)")
    for m in d.method_list():
        options = f" {m.options}" if m.options else ""
        lines.append(f"  {m.weight:.4g} x {m.name}{options}")
    if d.scheme is not None:
        lines.append(f"scheme {d.scheme.name} {d.scheme.options or ''}: several runs, each with this loss".rstrip())
    return lines


def trained_schedule(raw: dict[str, Any], command: str, role: str) -> str:
    """The schedule section (``train`` or ``teacher_train``) whose model this command trains."""
    if command == "train" and role == "teacher" and isinstance(raw.get("teacher_train"), dict):
        return "teacher_train"
    return "train"


def _trains_teacher_on_train(raw: dict[str, Any]) -> bool:
    """Whether a teacher this command trains would follow the ``train`` section (no ``teacher_train``,
    no teacher checkpoint)."""
    teacher = raw.get("teacher")
    has_checkpoint = isinstance(teacher, dict) and bool(teacher.get("checkpoint"))
    return not isinstance(raw.get("teacher_train"), dict) and not has_checkpoint


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        value = raw[name] = {}
    if not isinstance(value, dict):
        raise ConfigError(f"Config section '{name}' must be a mapping of keys to values, got {str(value)[:60]!r}.")
    return value


def _mirror_train_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """``kdistill train`` (teacher) with a ``teacher_train`` section: ``--set train.*`` means that schedule."""
    mirrored = [text for text in overrides if text.split("=", 1)[0].strip().startswith("train.")]
    if not mirrored:
        return
    raw.update(apply_overrides(raw, ["teacher_" + text.lstrip() for text in mirrored]))
    log.warning("kdistill train trains the teacher with teacher_train: applied %s to teacher_train too",
                ", ".join(text.split("=", 1)[0] for text in mirrored))


def _set_teacher_checkpoint(raw: dict[str, Any], checkpoint: str) -> None:
    teacher = _section(raw, "teacher")
    teacher["checkpoint"] = checkpoint
    if not teacher.get("model"):
        # a kdistill checkpoint names its architecture; plain .pt files need teacher.model
        from kdistill.train.checkpoint import is_torch_pickle, read_checkpoint_metadata

        if is_torch_pickle(checkpoint):
            raise ConfigError(f"--teacher '{checkpoint}' is a plain PyTorch file, which does not say which "
                              "architecture it holds; add teacher: {model: NAME} to the config.")
        spec = read_checkpoint_metadata(checkpoint).get("model_spec") or {}
        if not isinstance(spec.get("model"), str):
            raise ConfigError(f"--teacher '{checkpoint}' does not record its model; add teacher: {{model: NAME}} "
                              "to the config.")
        teacher["model"] = spec["model"]


def _set_method(raw: dict[str, Any], method: str) -> None:
    """``--method NAME``: the one loss method of the run (replacing any list), or the scheme to run."""
    from kdistill.schemes import scheme_names

    distill = _section(raw, "distill")
    if method in scheme_names():
        old = distill.get("scheme") if isinstance(distill.get("scheme"), dict) else {}
        same = old.get("name") == method
        distill["scheme"] = {"name": method, "options": old.get("options", {}) if same else {}}
        if distill.get("method") in scheme_names():
            distill.pop("method")
        return
    distill["method"] = method
    distill.pop("methods", None)
    distill.pop("terms", None)


# loggers whose INFO lines are shown without --verbose: which layers the feature methods hook, the
# loss terms with their weights and how the data is read (whole or streamed, image colour and size)
# change what is trained, and which teacher a run reuses or resumes changes what it learns from
ALWAYS_SHOWN = ("kdistill.layers", "kdistill.loss", "kdistill.data", "kdistill.runs")


def configure_logging(verbose: bool) -> None:
    """Warnings (and with ``-v`` progress notes) on stderr, so stdout holds only results.

    kdistill's own logger passes INFO lines on in any case, so a run's
    ``train.log`` holds them (:mod:`kdistill.experiment.runs`); the terminal
    shows them only with ``-v``, except those of :data:`ALWAYS_SHOWN`.
    """
    from rich.console import Console
    from rich.logging import RichHandler

    threshold = logging.INFO if verbose else logging.WARNING

    def shown(record: logging.LogRecord) -> bool:
        return record.levelno >= threshold or (
            record.levelno >= logging.INFO and record.name.startswith(ALWAYS_SHOWN))

    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False)
    handler.addFilter(shown)
    logging.basicConfig(level=threshold, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("kdistill").setLevel(logging.INFO)
