"""kdistill evaluate CHECKPOINT: test-set accuracy, size, latency and fidelity to a teacher."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kdistill.cli.common import path_argument
from kdistill.cli.render import print_metrics
from kdistill.config import parse_override
from kdistill.errors import ConfigError
from kdistill.experiment import evaluate_checkpoint, evaluation_data


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a saved model",
        description="Evaluate a kdistill checkpoint on its data set's test split.")
    parser.add_argument("checkpoint", type=path_argument, help="a .safetensors checkpoint written by kdistill")
    parser.add_argument("--teacher", metavar="CHECKPOINT", type=path_argument, help="also report agreement and KL to this teacher")
    parser.add_argument("--dataset", help="data set to evaluate on (default: the one it was trained on, "
                        "with the loader options its checkpoint records)")
    parser.add_argument("--data-dir", type=path_argument, help="folder holding the data set files")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="set one data set loader option, e.g. path=reviews.csv (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(run=run)


def _options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        try:
            key, value = parse_override(pair)
        except ConfigError as error:  # the same rules as --set, named after this flag
            raise ConfigError(str(error).replace("Override", "--data-option", 1)) from None
        if len(key) != 1:
            raise ConfigError(f"--data-option '{pair}' must look like KEY=VALUE, e.g. path=reviews.csv.")
        options[key[0]] = value
    return options


def run(args: argparse.Namespace) -> int:
    data = evaluation_data(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir,
                           options=_options(args.data_option))
    metrics = evaluate_checkpoint(args.checkpoint, data, teacher_checkpoint=args.teacher)
    if args.json:
        print(json.dumps(metrics, indent=2, default=float))
    else:
        print_metrics(f"{args.checkpoint} on {data.name}", metrics)
    return 0
