"""report.html: one self-contained page with the findings, the plots and the full table.

The plots are embedded as base64 PNG (the page opens anywhere, offline) and
also written next to it. The "which technique when" section is computed from
the measured rows by :func:`findings`; nothing in it is fixed text about
outcomes.
"""

from __future__ import annotations

import base64
import html
import statistics
from pathlib import Path
from typing import Any

from kdistill.eval import format_bytes
from kdistill.study.plots import PLOTS, ok_rows, pareto_front
from kdistill.study.variational import findings as variational_findings
from kdistill.train.checkpoint import atomic_write_bytes, atomic_write_text

Row = dict[str, Any]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _name(r: Row) -> str:
    return r["run"]


def findings(rows: list[Row], tolerance: float = 0.01) -> list[str]:
    """Plain sentences drawn from the measurements ("which technique when")."""
    data = ok_rows(rows)
    base = {r["model"]: r for r in data if r["technique"] == "baseline"}
    if not base:
        return ["No baseline finished yet."]
    out: list[str] = []
    best = max(base.values(), key=lambda r: r["accuracy"])
    out.append(f"Most accurate baseline: <b>{best['model']}</b>, {_pct(best['accuracy'])} at "
               f"{format_bytes(best['size_bytes'])}.")
    near = [r for r in data if r["accuracy"] >= best["accuracy"] - tolerance]
    smallest = min(near, key=lambda r: r["size_bytes"])
    out.append(f"Smallest model within {100 * tolerance:.0f} point of it: <b>{_name(smallest)}</b> "
               f"({_pct(smallest['accuracy'])}, {format_bytes(smallest['size_bytes'])}, "
               f"{best['size_bytes'] / smallest['size_bytes']:.1f}x smaller).")
    kd = [r for r in data if r["technique"] == "distilled" and r["source"] in base]
    if kd:
        close = [r for r in kd if r["accuracy"] >= base[r["source"]]["accuracy"] - tolerance]
        if close:
            r = min(close, key=lambda r: r["size_bytes"])
            t = base[r["source"]]
            out.append(f"Distillation: the smallest student within {100 * tolerance:.0f} point of its "
                       f"teacher is <b>{r['model']}</b> taught by {r['source']} ({_pct(r['accuracy'])} vs "
                       f"{_pct(t['accuracy'])}), {t['size_bytes'] / r['size_bytes']:.0f}x smaller.")
        else:
            r = min(kd, key=lambda r: base[r["source"]]["accuracy"] - r["accuracy"])
            out.append(f"Distillation: no student came within {100 * tolerance:.0f} point of its teacher; "
                       f"the closest is {r['model']} from {r['source']} "
                       f"({100 * (r['accuracy'] - base[r['source']]['accuracy']):+.2f} points).")
        gains = [r["accuracy"] - base[r["model"]]["accuracy"] for r in kd if r["model"] in base]
        if gains:
            wins = sum(g > 0 for g in gains)
            out.append(f"Distilled students beat the same model trained alone in {wins} of {len(gains)} "
                       f"pairs (median change {100 * statistics.median(gains):+.2f} points).")
    for tech, label in (("dynamic-int8", "Dynamic int8 quantization"), ("static-int8", "Static int8 quantization")):
        q = [r for r in data if r["technique"] == tech and r["model"] in base]
        if q:
            ratio = statistics.median(r["size_bytes"] / base[r["model"]]["size_bytes"] for r in q)
            drop = statistics.median(r["accuracy"] - base[r["model"]]["accuracy"] for r in q)
            out.append(f"{label}: median size {100 * ratio:.0f}% of float32, median accuracy change "
                       f"{100 * drop:+.2f} points ({len(q)} models).")
    skipped = [r for r in rows if r.get("status") == "skipped"]
    if skipped:
        out.append("Skipped: " + "; ".join(f"{r['run']} ({html.escape(str(r.get('note'))[:120])})"
                                           for r in skipped) + ".")
    for tech, label in (("prune-unstructured", "Unstructured pruning"), ("prune-structured", "Structured pruning")):
        p = [r for r in data if r["technique"] == tech and r["model"] in base]
        if not p:
            continue
        by_setting: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        for r in p:
            by_setting.setdefault(r["setting"], []).append(r["accuracy"] - base[r["model"]]["accuracy"])
            ratios.setdefault(r["setting"], []).append(r["size_bytes"] / base[r["model"]]["size_bytes"])
        parts = [f"{s}: median {100 * statistics.median(v):+.2f} points at "
                 f"{100 * statistics.median(ratios[s]):.0f}% of the file size" for s, v in sorted(by_setting.items())]
        out.append(f"{label} (after the fine-tune): " + "; ".join(parts) + ".")
    out += variational_findings(rows)
    fastest = [r for r in near if r.get("torch_ms_b1") is not None]
    if fastest:
        r = min(fastest, key=lambda r: r["torch_ms_b1"])
        out.append(f"Fastest at batch 1 within {100 * tolerance:.0f} point of the best: <b>{_name(r)}</b>, "
                   f"{r['torch_ms_b1']:.3f} ms/sample in PyTorch ({best['torch_ms_b1']:.3f} for {best['model']}).")
    front = pareto_front(rows)
    out.append("Pareto front (no model is both smaller and more accurate): "
               + ", ".join(f"{_name(r)} ({_pct(r['accuracy'])}, {format_bytes(r['size_bytes'])})" for r in front) + ".")
    return out


def _cell(key: str, value: Any) -> str:
    if value is None or value == "":
        return "<td>-</td>"
    if key in ("accuracy", "agreement"):
        return f"<td>{100 * value:.2f}</td>"
    if key == "size_bytes":
        return f"<td data-v='{value}'>{format_bytes(value)}</td>"
    if key in ("params", "nonzero_params"):
        return f"<td>{value:,}</td>"
    if key in ("torch_ms_b1", "ort_ms_b1", "kl"):
        return f"<td>{value:.4f}</td>"
    if key in ("torch_samples_per_s", "ort_samples_per_s"):
        return f"<td>{value:,.0f}</td>"
    if key == "train_seconds":
        return f"<td>{value:.0f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


TABLE = [("run", "run"), ("technique", "technique"), ("accuracy", "acc. %"), ("size_bytes", "size on disk"),
         ("params", "params"), ("nonzero_params", "non-zero"), ("torch_ms_b1", "torch ms/sample (b=1)"),
         ("torch_samples_per_s", "torch samples/s (large batch)"), ("ort_ms_b1", "ORT ms/sample (b=1)"),
         ("ort_samples_per_s", "ORT samples/s (large batch)"), ("reference", "compared with"),
         ("agreement", "agreement %"), ("kl", "KL"), ("train_seconds", "train s"), ("status", "status")]

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}figure{margin:0 0 1.5em 0}
figcaption{font-size:.85em;color:#555}table{border-collapse:collapse;font-size:.8em;width:100%}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}td:first-child,td:nth-child(2){text-align:left}
th{background:#f3f3f3;position:sticky;top:0}tr.front{background:#eef8ee}li{margin:.3em 0}
.meta{color:#555;font-size:.9em}"""


def render_html(rows: list[Row], title: str, images: dict[str, bytes], notes: list[str]) -> str:
    front = {r["run"] for r in pareto_front(rows)}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='meta'>{n}</p>" for n in notes]
    parts.append("<h2>Which technique when</h2><ul>")
    parts += [f"<li>{f}</li>" for f in findings(rows)]
    parts.append("</ul><h2>Plots</h2>")
    for file, (caption, _) in PLOTS.items():
        if file in images:
            data = base64.b64encode(images[file]).decode("ascii")
            parts.append(f"<figure><img alt='{caption}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{caption} (<a href='{file}'>{file}</a>)</figcaption></figure>")
    parts.append("<h2>All models</h2><p class='meta'>Green rows are on the Pareto front. Size on disk is the "
                 "file written under models/. Latency: median over repeats, fixed thread count.</p><table><tr>")
    parts += [f"<th>{label}</th>" for _, label in TABLE]
    parts.append("</tr>")
    for r in rows:
        parts.append(f"<tr id='{html.escape(r['run'])}'" + (" class='front'>" if r["run"] in front else ">"))
        parts += [_cell(key, r.get(key)) for key, _ in TABLE]
        parts.append("</tr>")
    parts.append("</table><p class='meta'>Data: results.csv, results.json (same folder).</p></body></html>")
    return "".join(parts)


def summary_markdown(rows: list[Row]) -> str:
    """The findings and the table in Markdown (``summary.md``), for docs and terminals."""
    import re

    lines = [f"- {re.sub(r'<[^>]+>', '', f)}" for f in findings(rows)]
    lines += ["", "| run | acc. % | size | params | torch ms (b=1) | torch samples/s | ORT ms (b=1) "
              "| ORT samples/s | agreement % | KL |", "|---|---|---|---|---|---|---|---|---|---|"]
    def num(r: Row, key: str, fmt: str, scale: float = 1.0) -> str:
        return format(scale * r[key], fmt) if r.get(key) is not None else "-"

    for r in ok_rows(rows):
        lines.append(f"| {r['run']} | {100 * r['accuracy']:.2f} | {format_bytes(r['size_bytes'])} | "
                     f"{r['params']:,} | {num(r, 'torch_ms_b1', '.3f')} | {num(r, 'torch_samples_per_s', ',.0f')} | "
                     f"{num(r, 'ort_ms_b1', '.3f')} | {num(r, 'ort_samples_per_s', ',.0f')} | "
                     f"{num(r, 'agreement', '.2f', 100)} | {num(r, 'kl', '.4f')} |")
    return "\n".join(lines) + "\n"


def write_report(rows: list[Row], out: str | Path, title: str, config: Any = None,
                 data_summary: str = "") -> dict[str, Path]:
    """Write the PNGs of :data:`PLOTS` and report.html into ``out``; return the paths by name."""
    out = Path(out)
    images: dict[str, bytes] = {}
    files: dict[str, Path] = {"csv": out / "results.csv", "json": out / "results.json"}
    for file, (_, draw) in PLOTS.items():
        images[file] = draw(rows)
        atomic_write_bytes(out / file, images[file])
        files[file] = out / file
    notes = [html.escape(data_summary)] if data_summary else []
    if config is not None:
        m = config.measure
        notes.append(f"Schedule: baselines {config.train.epochs} epochs; students "
                     f"{(config.distill.train or config.train).epochs} epochs (alpha {config.distill.alpha}, "
                     f"T {config.distill.temperature}); pruning fine-tune {config.prune.finetune_epochs} epoch(s). "
                     f"Latency: {m.threads} thread(s), batch {min(m.batch_sizes)} and {max(m.batch_sizes)}, "
                     f"median of {m.repeats} repeats.")
    atomic_write_text(out / "report.html", render_html(rows, title, images, notes))
    atomic_write_text(out / "summary.md", summary_markdown(rows))
    files["summary"] = out / "summary.md"
    files["report"] = out / "report.html"
    return files
