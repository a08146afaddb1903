"""kdistill study CONFIG: distillation vs quantization vs pruning, with plots and a report."""

from __future__ import annotations

import argparse

from kdistill.cli.common import path_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study", help="compare distillation, quantization and pruning on the model zoo",
        description="Train the study's baselines, compress each by int8 quantization and pruning, "
                    "distil the smaller models from the larger ones, and write results.csv, "
                    "results.json, five plots and report.html. Re-running resumes: finished runs "
                    "are skipped.")
    parser.add_argument("config", help="study YAML file (see examples/study-*.yaml)")
    parser.add_argument("--quick", action="store_true",
                        help="the config's quick schedule (data subset, few epochs; fits a CPU)")
    parser.add_argument("--output-dir", "-o", type=path_argument, help="where results go (default: the config's output_dir)")
    parser.add_argument("--data-dir", type=path_argument, help="folder holding the data set files")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="hide training progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kdistill.study.config import load_study_config
    from kdistill.study.runner import run_study

    cfg = load_study_config(args.config)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    if args.no_progress:
        cfg.train.progress = False
        if cfg.distill.train is not None:
            cfg.distill.train.progress = False
    result = run_study(cfg, args.output_dir, quick=args.quick, resume=not args.fresh)
    ok = sum(1 for r in result.rows if r.get("status") == "ok")
    print(f"{ok} models measured in {result.seconds / 60:.1f} min")
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0
