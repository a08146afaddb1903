"""kdistill export CHECKPOINT --format onnx|exported-program|safetensors."""

from __future__ import annotations

import argparse

from kdistill.cli.common import path_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained student to ONNX, a torch.export program or safetensors",
        description="Write the student in a kdistill checkpoint (adapters, optimiser and RNG state "
                    "dropped) as ONNX, a torch.export program (.pt2) or bare safetensors; ONNX and "
                    ".pt2 files are loaded back and checked against PyTorch's outputs. Text models "
                    "take input_ids and attention_mask. 'torchscript' was replaced by "
                    "exported-program and is refused with that hint.")
    parser.add_argument("checkpoint", type=path_argument, help="a kdistill checkpoint or model file (.safetensors)")
    # torchscript stays a choice so that asking for it gets the hint, not argparse's usage error
    parser.add_argument("--format", "-f", dest="fmt", required=True,
                        choices=("onnx", "exported-program", "safetensors", "torchscript"))
    parser.add_argument("--output", "-o", type=path_argument, help="output file (default: next to the checkpoint)")
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed max |difference| of logits")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kdistill.compress.export import export_model
    from kdistill.eval import format_bytes

    result = export_model(args.checkpoint, args.fmt, args.output, atol=args.atol)
    check = f", max |logit difference| vs PyTorch {result.max_abs_diff:.2e}" \
        if result.max_abs_diff is not None else ""
    print(f"{result.format}: {result.path} ({format_bytes(result.size_bytes)}{check})")
    if result.note:
        print(f"note: {result.note}")
    return 0
