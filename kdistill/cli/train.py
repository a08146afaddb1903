"""kdistill train CONFIG: train a model (a teacher, or a student on labels alone)."""

from __future__ import annotations

import argparse

from kdistill.cli.common import add_config_arguments, config_from_args, print_config
from kdistill.cli.render import print_metrics
from kdistill.experiment import tracked_invocation, train_model
from kdistill.experiment.runs import refuse_earlier_runs
from kdistill.experiment.validate import validate_output_dir
from kdistill.train.distributed import is_main_process


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a teacher or a plain model on labels",
        description="Train the config's teacher (default) or student on hard labels alone.")
    add_config_arguments(parser, "train")
    parser.add_argument("--role", choices=["teacher", "student"], default="teacher",
                        help="which model of the config to train (default: teacher)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "train")
    if args.print_config:
        print_config(cfg, "train", args.role)
        return 0
    out = cfg.resolved_output_dir() / args.role
    validate_output_dir(out)
    refuse_earlier_runs([out], resume=args.resume, overwrite=args.overwrite)
    with tracked_invocation(cfg, f"train {args.role}"):
        result = train_model(cfg, args.role, out_dir=out, resume=args.resume)
    if not is_main_process():  # under torchrun, rank 0 reports
        return 0
    print_metrics(f"{args.role}: {getattr(cfg, args.role).model}", result.metrics)
    print(f"best checkpoint: {result.checkpoint}")
    return 0
