"""Terminal output: small rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from kdistill.eval.measure import format_bytes

LABELS = {
    "accuracy": "accuracy", "errors": "errors", "n_test": "test samples", "params": "parameters",
    "size_bytes": "size on disk", "latency_ms": "CPU latency (ms/sample)", "agreement": "top-1 agreement",
    "kl": "KL(teacher||student)",
}


def format_value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "size_bytes":
        return format_bytes(int(value))
    if key in {"accuracy", "agreement"}:
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_metrics(title: str, metrics: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=title, show_header=False)
    for key, value in metrics.items():
        table.add_row(LABELS.get(key, key), format_value(key, value))
    (console or Console()).print(table)
