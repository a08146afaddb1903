"""Terminal output: small rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from kdistill.eval.measure import format_bytes

LABELS = {
    "accuracy": "accuracy", "errors": "errors", "n_test": "test samples", "params": "parameters",
    "size_bytes": "size on disk", "latency_ms": "CPU latency, batch 1 (ms, median)", "agreement": "top-1 agreement",
    "kl": "KL(teacher||student)",
}


# shown inside the latency row rather than as rows of their own
_LATENCY_DETAIL = ("latency_p10_ms", "latency_p90_ms", "latency_threads")


def format_latency(metrics: dict[str, Any]) -> str:
    """``0.1234 (p10 0.1201, p90 0.1302; 1 thread)``: the median and how much the runs varied."""
    text = format_value("latency_ms", metrics.get("latency_ms"))
    detail = []
    if metrics.get("latency_p10_ms") is not None and metrics.get("latency_p90_ms") is not None:
        detail.append(f"p10 {metrics['latency_p10_ms']:.4g}, p90 {metrics['latency_p90_ms']:.4g}")
    threads = metrics.get("latency_threads")
    if threads is not None:
        detail.append(f"{threads} thread{'s' if threads != 1 else ''}")
    return f"{text} ({'; '.join(detail)})" if detail and metrics.get("latency_ms") is not None else text


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
        if key in _LATENCY_DETAIL and "latency_ms" in metrics:
            continue
        text = format_latency(metrics) if key == "latency_ms" else format_value(key, value)
        table.add_row(LABELS.get(key, key), text)
    (console or Console()).print(table)
