"""The metrics table shows the latency's median with its spread and thread count, in one row."""

from rich.console import Console

from kdistill.cli.render import print_metrics


def test_latency_row_shows_median_spread_and_threads():
    console = Console(record=True, width=120)
    print_metrics("student", {"accuracy": 0.9, "latency_ms": 0.25, "latency_p10_ms": 0.2,
                              "latency_p90_ms": 0.4, "latency_threads": 1}, console)
    text = console.export_text()
    assert "0.25 (p10 0.2, p90 0.4; 1 thread)" in text
    assert "latency_p10_ms" not in text and "latency_threads" not in text


def test_metrics_without_spread_still_render():
    console = Console(record=True, width=120)
    print_metrics("old run", {"latency_ms": 0.25}, console)
    assert "0.25" in console.export_text()
