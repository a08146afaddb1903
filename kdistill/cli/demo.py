"""kdistill demo: the whole story in one command, on an embedded data set by default."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from kdistill.cli.common import path_argument
from kdistill.cli.render import format_value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="teacher vs student alone vs distilled student, with a table and a plot",
        description="Train a teacher, a student on labels alone and the same student distilled from "
                    "the teacher (several seeds), then print and save a comparison table and an "
                    "accuracy-vs-size plot. Runs on scikit-learn's bundled digits by default.")
    parser.add_argument("--dataset", default="digits", help="digits (default), mnist or fashion-mnist")
    parser.add_argument("--seeds", type=int, default=5, help="student runs per variant (default 5)")
    parser.add_argument("--output-dir", "-o", type=path_argument, default="kdistill-out/demo", help="where results go")
    parser.add_argument("--data-dir", type=path_argument, help="folder holding the data set files")
    parser.add_argument("--device", help="cpu, cuda or auto")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kdistill.study.demo import run_demo

    result = run_demo(args.dataset, args.seeds, args.output_dir, data_dir=args.data_dir,
                      device=args.device, progress=not args.no_progress)
    table = Table(title=f"kdistill demo: {args.dataset}, {args.seeds} seed(s) per student")
    for column in ("model", "role", "accuracy", "errors", "params", "size", "latency ms", "agreement", "KL"):
        table.add_column(column)
    for r in result.rows:
        acc = f"{100 * r['accuracy']:.2f}% ± {100 * r['accuracy_std']:.2f}"
        table.add_row(r["model"], r["role"], acc, f"{r['errors']:.1f}", format_value("params", r["params"]),
                      format_value("size_bytes", r["size_bytes"]), f"{r['latency_ms']:.3f}",
                      format_value("agreement", r.get("agreement")), format_value("kl", r.get("kl")))
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(table)
    for kind, path in result.files.items():
        console.print(f"{kind}: {path}")
    return 0
