"""Pieces shared by the CLI commands: config options and user-facing error handling."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kdistill.config import ExperimentConfig, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML experiment file (see examples/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--output-dir", "-o", help="where checkpoints and results go")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides train.device)")
    parser.add_argument("--epochs", type=int, help="overrides train.epochs")
    parser.add_argument("--seed", type=int, help="overrides train.seed")
    parser.add_argument("--data-dir", help="folder holding the data set files (overrides data.data_dir)")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue from a last.safetensors checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    overrides = list(args.overrides)
    for flag, key in (("device", "train.device"), ("epochs", "train.epochs"), ("seed", "train.seed"),
                      ("data_dir", "data.data_dir"), ("output_dir", "output_dir")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if getattr(args, "no_progress", False):
        overrides.append("train.progress=false")
    return load_config(Path(args.config), overrides)


def configure_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False)], force=True)
