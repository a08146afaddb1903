"""kdistill tune CONFIG --trials N: search temperature, alpha, learning rate with Optuna."""

from __future__ import annotations

import argparse

from kdistill.cli.common import add_config_arguments, config_from_args, print_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="search distillation hyperparameters with Optuna",
        description="Search temperature, alpha, learning rate and method weights (or the config's "
                    "tune.search keys) with Optuna, pruning trials below the median. Running the "
                    "same command again resumes the search; several machines can share one "
                    "study through --storage.")
    add_config_arguments(parser, "tune")
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study should reach (default 20)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage URL, e.g. postgresql://user@host/db (default: sqlite "
                             "file tune.db in the output folder)")
    parser.add_argument("--study-name", help="name of the study in the storage (default: the config's name)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting new trials after this long")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kdistill.tune import run_tune

    cfg = config_from_args(args, "tune")
    if args.print_config:
        print_config(cfg, "distill")
        return 0
    out = cfg.resolved_output_dir() / "tune"
    try:
        result = run_tune(cfg, args.trials, storage=args.storage, study_name=args.study_name,
                          out_dir=out, timeout=args.timeout, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print("kdistill: search interrupted; finished trials are stored. Run the same command "
              "again to resume.")
        return 130
    print(f"study '{result.study_name}' in {result.storage}: {result.finished_trials} finished trials")
    print(f"best validation score {result.best_value:.4f} with "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in sorted(result.best_params.items())))
    print(f"best config: {result.best_config_path}")
    for plot in result.plots:
        print(f"plot: {plot}")
    return 0
