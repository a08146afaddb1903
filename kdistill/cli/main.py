"""The ``kdistill`` command: a thin front end over the library.

User mistakes (bad config, missing data, incompatible models, an output
folder that cannot be written) are printed as one paragraph and exit with
status 2, and so is running out of memory, which is a limit of the machine and
not a bug; only real bugs show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import yaml

from kdistill import __version__
from kdistill.errors import KDistillError

# one module per command under kdistill.cli; each provides add_parser(subparsers)
COMMANDS = ("train", "distill", "evaluate", "demo", "study", "export", "predict", "tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdistill",
        description="Knowledge distillation: teach a small student from a large teacher and "
                    "measure what the compression bought and cost.")
    parser.add_argument("--version", action="version", version=f"kdistill {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"kdistill.cli.{name}").add_parser(subparsers)
    for command in subparsers.choices.values():  # user code, chosen on the command line (kdistill.cli.plugins)
        command.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE_OR_FILE.py",
                             help="import a module that registers models, methods, data sets or schemes "
                                  "first: a path to a .py file or an installed module's name (repeatable)")
    return parser


def fail(message: str) -> int:
    # one line, unwrapped: paths and URLs in the message stay intact for copy and paste
    print(f"kdistill: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


OUT_OF_MEMORY = ("Out of memory{where}: the run needs more than this machine has. Use a smaller "
                 "train.batch_size, a smaller model (fewer or narrower layers), or fewer samples "
                 "(data.limit_train).")


def _is_allocation_failure(error: RuntimeError) -> bool:
    # PyTorch reports a failed CPU allocation as a plain RuntimeError from its allocator
    text = str(error)
    return "DefaultCPUAllocator: can't allocate memory" in text or "CUDA out of memory" in text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):  # no command: the help is the error message
        parser.print_help(sys.stderr)
        return 2
    from kdistill.cli.common import configure_logging

    configure_logging(args.verbose)
    try:
        from kdistill.cli.plugins import load_plugins

        load_plugins(args.plugins)
        return int(args.run(args) or 0)
    except KDistillError as error:
        return fail(str(error))
    except MemoryError:
        return fail(OUT_OF_MEMORY.format(where=""))
    except RuntimeError as error:  # torch.OutOfMemoryError (GPU memory) is a RuntimeError too
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return fail(OUT_OF_MEMORY.format(where=" on the GPU"))
        if _is_allocation_failure(error):
            return fail(OUT_OF_MEMORY.format(where=""))
        raise
    except yaml.YAMLError as error:
        return fail(f"Could not read YAML: {error}")
    except KeyboardInterrupt:
        return fail("Interrupted; the last completed epoch's checkpoint is intact.")


if __name__ == "__main__":
    sys.exit(main())
