"""kdistill predict MODEL INPUT...: run an exported ONNX student on raw image files or table rows."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify raw images or table rows with an exported ONNX student",
        description="Run an ONNX file written by 'kdistill export --format onnx' through ONNX Runtime. "
                    "The file records how its inputs were prepared in training: images (PNG, JPEG, "
                    "...) are converted to its channels, resized to its size, scaled and standardised; "
                    "CSV/TSV/Parquet rows are read by its column names and scaled. Prints each input's "
                    "most probable classes (or a regressor's value); -o writes them as CSV or JSON.")
    parser.add_argument("model", help="an .onnx file written by kdistill export")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders of images, or CSV/TSV/Parquet files (one result per row)")
    parser.add_argument("--top-k", "-k", type=int, default=3, help="classes shown per input (default 3)")
    parser.add_argument("--output", "-o", help="write the results to this .csv or .json file instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kdistill.compress.predict import as_records, predict_inputs, write_predictions

    result = predict_inputs(args.model, args.inputs)
    if args.output:
        path = write_predictions(result, args.output, args.top_k)
        print(f"{len(result.rows)} prediction(s) written to {path}")
        return 0
    for record in as_records(result, args.top_k):
        if "value" in record:
            print(f"{record['input']}: {record['value']:.6g}")
        else:
            ranked = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in record["top"])
            print(f"{record['input']}: {ranked}")
    return 0
