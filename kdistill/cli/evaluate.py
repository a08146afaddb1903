"""kdistill evaluate CHECKPOINT: test-set accuracy, size, latency and fidelity to a teacher."""

from __future__ import annotations

import argparse
import json

from kdistill.cli.render import print_metrics
from kdistill.data import load_dataset
from kdistill.experiment import evaluate_checkpoint
from kdistill.train import read_checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a saved model",
        description="Evaluate a kdistill checkpoint on its data set's test split.")
    parser.add_argument("checkpoint", help="a .safetensors checkpoint written by kdistill")
    parser.add_argument("--teacher", metavar="CHECKPOINT", help="also report agreement and KL to this teacher")
    parser.add_argument("--dataset", help="data set to evaluate on (default: the one it was trained on)")
    parser.add_argument("--data-dir", help="folder holding the data set files")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    _, meta = read_checkpoint(args.checkpoint)
    dataset = args.dataset or meta.get("model_spec", {}).get("dataset", "digits")
    data = load_dataset(dataset, data_dir=args.data_dir)
    metrics = evaluate_checkpoint(args.checkpoint, data, teacher_checkpoint=args.teacher)
    if args.json:
        print(json.dumps(metrics, indent=2, default=float))
    else:
        print_metrics(f"{args.checkpoint} on {dataset}", metrics)
    return 0
