"""kdistill distill CONFIG: teach the config's student from its teacher."""

from __future__ import annotations

import argparse

from kdistill.cli.common import add_config_arguments, config_from_args, path_argument, print_config
from kdistill.cli.render import print_metrics
from kdistill.experiment import tracked_invocation
from kdistill.schemes import run_experiment
from kdistill.train.distributed import is_main_process


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distill", help="distil a student from a teacher",
        description="Distil the config's student from its teacher (trained first when the config "
                    "gives no teacher checkpoint), then report accuracy and fidelity.")
    add_config_arguments(parser, "distill")
    parser.add_argument("--method", help="distillation method or scheme, e.g. crd, dkd, born-again: a method "
                        "replaces distill.method, distill.methods and distill.terms; a scheme sets distill.scheme")
    parser.add_argument("--teacher", metavar="CHECKPOINT", type=path_argument, help="teacher checkpoint (overrides teacher.checkpoint)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "distill")
    if args.print_config:
        print_config(cfg, "distill")
        return 0
    with tracked_invocation(cfg, "distill"):
        result = run_experiment(cfg, resume=args.resume, overwrite=args.overwrite)
    if not is_main_process():  # under torchrun, rank 0 reports
        return 0
    print_metrics(f"distilled student: {cfg.student.model}", result.metrics)
    print(f"best checkpoint: {result.checkpoint}")
    return 0
