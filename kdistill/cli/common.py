"""Pieces shared by the CLI commands: config options, their scope, and logging.

Every command that reads an experiment file builds its config with
:func:`config_from_args`, so a flag means the same thing everywhere:

* ``--set KEY=VALUE`` sets one config value, read as YAML (``train.epochs=3``).
* ``--output-dir``, ``--data-dir`` and ``--teacher`` are paths, taken as
  written (never read as YAML: ``-o "runs/run #2"`` is that folder).
* ``--epochs`` sets the epochs of what the command trains: ``kdistill
  train`` the model it trains (the teacher's schedule, ``teacher_train``
  when the config has one), ``distill`` and ``tune`` the student
  (``train.epochs``); ``distill --teacher-epochs`` the teacher.
* ``--loader`` and ``--workers`` set ``data.loader`` and ``data.workers``.
* ``--seed``, ``--device`` and ``--no-progress`` apply to every schedule
  the command may run (``train`` and ``teacher_train``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from kdistill.config import ExperimentConfig, apply_overrides, parse_config, read_yaml
from kdistill.errors import ConfigError

log = logging.getLogger("kdistill")


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The config file and the options every config-reading command shares (see the module doc)."""
    trained = {"train": "the model this command trains", "distill": "the student (train.epochs)",
               "tune": "each trial's student (train.epochs)"}[command]
    parser.add_argument("config", help="YAML experiment file (see examples/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, read as YAML, e.g. --set train.epochs=3 (repeatable); "
                             "training features: train.accumulate=K (micro-batches per step), train.ema=0.999 "
                             "(moving average of the student), train.patience=N (early stopping), train.amp=fp16 "
                             "(CUDA), train.optimizer.decay_bias_and_norm=true")
    parser.add_argument("--output-dir", "-o", help="where checkpoints and results go (a path, taken as written)")
    parser.add_argument("--data-dir", help="folder holding the data set files (overrides data.data_dir)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto, for every schedule the command runs")
    parser.add_argument("--loader", choices=["auto", "memory", "stream"],
                        help="data.loader: memory (whole set on the device), stream (DataLoader workers read it "
                             "sample by sample: any size), auto (memory when it fits comfortably)")
    parser.add_argument("--workers", type=int, help="data.workers: DataLoader worker processes when streaming")
    parser.add_argument("--epochs", type=int, help=f"epochs of {trained}")
    if command != "tune":
        parser.add_argument("--seed", type=int, help="seed of every schedule the command runs "
                                                     "(train.seed and teacher_train.seed)")
        parser.add_argument("--resume", metavar="CHECKPOINT",
                            help="continue from a last.safetensors checkpoint of the same run")
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
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
    if getattr(args, "teacher_epochs", None) is not None:
        if not isinstance(raw.get("teacher_train"), dict):
            raw["teacher_train"] = dict(_section(raw, "train"))  # the teacher's own copy of the schedule
        raw["teacher_train"]["epochs"] = args.teacher_epochs
    return parse_config(raw, source=f"'{path}'")


def trained_schedule(raw: dict[str, Any], command: str, role: str) -> str:
    """The schedule section (``train`` or ``teacher_train``) whose model this command trains."""
    if command == "train" and role == "teacher" and isinstance(raw.get("teacher_train"), dict):
        return "teacher_train"
    return "train"


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


def configure_logging(verbose: bool) -> None:
    """Warnings (and with ``-v`` progress notes) on stderr, so stdout holds only results."""
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[handler], force=True)
    # which layers the feature methods hook changes what is trained: always shown
    logging.getLogger("kdistill.layers").setLevel(logging.INFO)
    # how the data is read (whole or streamed, image colour and size) changes what is trained: always shown
    logging.getLogger("kdistill.data").setLevel(logging.INFO)
