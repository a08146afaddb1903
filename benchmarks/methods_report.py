"""The methods benchmark's report, built only from run records committed beside it.

:func:`write` copies the records of every finished run out of the git-ignored
work folders into ``docs/benchmarks/`` (``methods.json``: the main runs, tuning
and teachers; ``methods-longer.json``: the longer-schedule runs;
``methods-earlier.json``: the runs with an earlier teacher;
``methods-schedule.json``: the plain-loop runs), then :func:`render` writes
``METHODS_BENCHMARK.md`` and ``benchmarks/methods.{csv,png}`` from those files
alone. So every number in the report has a committed record, and
``python benchmarks/methods_report.py`` rebuilds the report from a checkout.

A section published before its runs' records were kept has no record file; its
text is kept in ``benchmarks/methods-<section>.unrecorded.md`` and shown under a
banner that says so, until a rerun writes the record file, which then wins.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from methods_notes import (
    method_notes,
    not_run,
    rows_missing,
    setup_text,
    teacher_model,
    tuning_table,
)
from methods_rows import SCHEDULE
from methods_schedule import load_runs, schedule_section
from methods_stats import fmt, mean_std

from kdistill.train.checkpoint import atomic_write_bytes, atomic_write_text

COLUMNS = ("tuned", "paper")
STUDENT_ORDER = ("small", "large", "cnn")
DATASETS = ("fashion-mnist", "mnist")
STUDENT_TITLES = {"small": "mlp-simple [32], 25,450 parameters",
                  "large": "mlp-simple [128], 101,770 parameters",
                  "cnn": "cnn-simple [16, 32, 64], 24,058 parameters"}
COLUMN_TITLES = {"tuned": "settings chosen by `kdistill tune` on the validation split",
                 "paper": "the papers' default settings"}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def load_records(work: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(work.glob("*/runs/*/*/*/seed*/result.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a file being replaced right now: the next report picks it up
    return records


def load_tuning(work: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(work.glob("*/tune/*/*/bench.json")):
        record = json.loads(path.read_text())
        if "best_params" in record:
            out.append({"dataset": path.parts[-5], "student": path.parts[-3], "method": path.parts[-2], **record})
    return out


def load_teachers(work: Path) -> dict[str, Any]:
    out = {}
    for path in sorted(work.glob("*/bench-teachers.json")):
        out[path.parent.name] = json.loads(path.read_text())
    return out


def val_accuracy(record: dict[str, Any]) -> float | None:
    """Validation accuracy of the kept (best-validation) epoch, or ``None`` without a history."""
    history, best = record.get("val_history") or [], record.get("best_epoch", -1)
    return history[best] if 0 <= best < len(history) else None


def summarise(records: list[dict[str, Any]], dataset: str, student: str, column: str) -> list[dict[str, Any]]:
    """One line per row of a (data set, student, column) table, with the gain over the student alone, best first."""
    mine = [r for r in records if r["dataset"] == dataset and r["student"] == student
            and r["column"] in (column, "shared")]
    alone = {r["seed"]: r for r in mine if r["row"] == "alone"}
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in mine:
        rows.setdefault(r["row"], []).append(r)
    lines = []
    for slug, rs in rows.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        paired = [r["accuracy"] - alone[r["seed"]]["accuracy"] for r in rs if r["seed"] in alone]
        paired_last = [r["last_accuracy"] - alone[r["seed"]]["last_accuracy"] for r in rs if r["seed"] in alone]
        paired_val = [val_accuracy(r) - val_accuracy(alone[r["seed"]]) for r in rs if r["seed"] in alone
                      and val_accuracy(r) is not None and val_accuracy(alone[r["seed"]]) is not None]
        lines.append({
            "dataset": dataset, "student": student, "column": column, "row": slug, "label": rs[0]["label"],
            "settings": rs[0]["settings"], "seeds": len(rs),
            "accuracy": [r["accuracy"] for r in rs], "last_accuracy": [r["last_accuracy"] for r in rs],
            "agreement": [r["agreement"] for r in rs], "kl": [r["kl"] for r in rs],
            "gain": paired, "gain_last": paired_last, "val_gain": paired_val, "cpu_s": [r["cpu_s"] for r in rs],
            "wall_s": [r["wall_s"] for r in rs], "best_epoch": [r["best_epoch"] for r in rs],
        })
    lines.sort(key=lambda x: -statistics.fmean(x["gain"]) if x["gain"] else 0.0)
    return lines


def tables(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The summarised table of every (data set, student, column) with at least one run of that column."""
    found = {}
    for dataset in DATASETS:
        for student in STUDENT_ORDER:
            for column in COLUMNS:
                if any(r["dataset"] == dataset and r["student"] == student and r["column"] == column
                       for r in records):
                    found[(dataset, student, column)] = summarise(records, dataset, student, column)
    return found


def table_markdown(lines: list[dict[str, Any]]) -> list[str]:
    out = ["| method | settings | seeds | test acc., best epoch (%) | test acc., last epoch (%) | "
           "gain over alone (points) | agreement with teacher (%) | KL(teacher‖student) | CPU s per run |",
           "|---|---|---|---|---|---|---|---|---|"]
    for x in lines:
        gain = fmt(x["gain"]) if x["gain"] else "-"
        if x["row"] == "alone":
            gain = "0 (reference)"
        gain = f"**{gain}**" if x["gain"] and mean_std(x["gain"])[0] > 0 and x["row"] != "alone" else gain
        out.append(f"| {x['label']} | {x['settings']} | {x['seeds']} | {fmt(x['accuracy'])} | "
                   f"{fmt(x['last_accuracy'])} | {gain} | {fmt(x['agreement'])} | "
                   f"{fmt(x['kl'], 1.0, 3)} | {statistics.fmean(x['cpu_s']):.0f} |")
    return out


def targets(all_lines: dict[tuple[str, str, str], list[dict[str, Any]]], epochs: dict[str, Any]) -> list[str]:
    """The two targets, checked per data set and student from the tuned tables (the cnn student's kd
    uses the small student's tuned values). The best method is the one with the largest paired gain in
    validation accuracy (at each run's kept epoch); its test gain is then reported, so the test set
    never takes part in the choice."""
    out = []
    for (dataset, student, column), lines in all_lines.items():
        if column != "tuned":
            continue
        alone = next((x for x in lines if x["row"] == "alone"), None)
        others = [x for x in lines if x["row"] != "alone" and x["gain"] and x["val_gain"]]
        if alone is None or not others:
            continue
        best = max(others, key=lambda x: statistics.fmean(x["val_gain"]))
        val_gain = statistics.fmean(best["val_gain"])
        gain, gain_std = mean_std(best["gain"])
        spread = max(mean_std(alone["accuracy"])[1], gain_std)
        met = gain > 2 * spread and len(best["gain"]) > 1
        kd = next((x for x in lines if x["row"] == "kd"), None)
        kd_text = "kd not run yet"
        if kd is not None and kd["gain"]:
            kd_gain = statistics.fmean(kd["gain"])
            whose = "the small student's" if student == "cnn" else "its"
            kd_text = (f"kd at {whose} tuned settings {'is not' if kd_gain >= 0 else 'IS'} below the student "
                       f"alone ({100 * kd_gain:+.2f} points)")
        out.append(f"- {dataset}, {STUDENT_TITLES[student]}, {epochs[student]} epochs: best method on the "
                   f"validation split **{best['label']}** ({100 * val_gain:+.2f} validation points over the student "
                   f"alone); on the test set {100 * gain:+.2f} ± {100 * gain_std:.2f} points (seed spread of "
                   f"the student alone ± {100 * mean_std(alone['accuracy'])[1]:.2f}): target "
                   f"{'met' if met else 'NOT met'} (gain > 2 x the larger spread, {len(best['gain'])} seeds); "
                   f"{kd_text}.")
    return out


def plot_png(all_lines: dict[tuple[str, str, str], list[dict[str, Any]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, s) for d in DATASETS for s in STUDENT_ORDER
              if any(k[0] == d and k[1] == s for k in all_lines)]
    if not panels:
        panels = [("none", "small")]
    ncols = min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 7.2 * nrows), dpi=100, squeeze=False)
    colours = {"tuned": "tab:blue", "paper": "tab:orange"}
    for ax, (dataset, student) in zip(axes.flat, panels):
        tuned = all_lines.get((dataset, student, "tuned"), [])
        order = [x["row"] for x in tuned if x["row"] != "alone"]
        for column in COLUMNS:
            for x in all_lines.get((dataset, student, column), []):
                if x["row"] not in order and x["row"] != "alone":
                    order.append(x["row"])
        labels = {}
        for column, offset in zip(COLUMNS, (-0.18, 0.18)):
            lines = {x["row"]: x for x in all_lines.get((dataset, student, column), [])}
            ys, xs, errs = [], [], []
            for i, slug in enumerate(order):
                if slug in lines and lines[slug]["gain"]:
                    mean, std = mean_std(lines[slug]["gain"])
                    ys.append(i + offset)
                    xs.append(100 * mean)
                    errs.append(100 * std)
                    labels[slug] = lines[slug]["label"]
            if xs:
                ax.errorbar(xs, ys, xerr=errs, fmt="o", color=colours[column], capsize=3, markersize=5,
                            label={"tuned": "tuned settings", "paper": "papers' defaults"}[column])
        ax.axvline(0.0, color="black", linewidth=1)
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([_short(labels.get(s, s)) for s in order], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("gain over the student alone (points)")
        ax.set_title(f"{dataset}: {STUDENT_TITLES[student]}", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Test accuracy gain over the same student trained alone: mean ± std of the paired "
                 "per-seed differences", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _short(label: str) -> str:
    return label if len(label) <= 38 else label[:36] + "…"


def command_history(path: Path) -> list[str]:
    """The commands recorded in a data set's ``bench-command.json``, oldest first (none if absent)."""
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    return saved.get("commands") or [saved["command"]]  # one "command": the file's first format


def commands(work: Path, datasets: list[str]) -> dict[str, list[str]]:
    """Per data set, the command lines that produced its runs, in the order they ran."""
    found = {name: command_history(work / name / "bench-command.json") for name in datasets}
    return {name: history for name, history in found.items() if history}


def teacher_comparison(earlier: dict[str, Any], records: list[dict[str, Any]], teachers: dict[str, Any]) -> list[str]:
    """The tuned rows' gains with an earlier, weaker teacher (the record of a work folder moved aside)
    beside today's."""
    old_records, old_teachers = earlier["runs"], earlier["teachers"]
    lines: list[str] = []
    for dataset in DATASETS:
        if dataset not in old_teachers or dataset not in teachers:
            continue
        old_t, new_t = old_teachers[dataset]["teacher"], teachers[dataset].get("teacher", {})
        if "accuracy" not in new_t:
            continue
        old_name, new_name = teacher_model(old_teachers[dataset]), teacher_model(teachers[dataset])
        history = earlier["commands"].get(dataset, [])
        lines += [
            f"## {dataset}: what a stronger teacher changes", "",
            f"The same tuned rows, run first with `{old_name}` as the teacher ({100 * old_t['accuracy']:.2f}%, "
            f"{old_t.get('epochs', '?')} epochs) and now with `{new_name}` ({100 * new_t['accuracy']:.2f}%). "
            "Tuning was redone for the new teacher, so the settings differ; the student alone is the same "
            f"runs in both. The earlier runs were in `{earlier['work']}/{dataset}` (moved there from "
            "`runs/bench-methods`, with the teacher config they used; their records: "
            "`benchmarks/methods-earlier.json`); their commands, in order: "
            + "; ".join(f"`{c}`" for c in history) + ".", "",
            f"| student | method | gain with {old_name} (points) | gain with {new_name} (points) |",
            "|---|---|---|---|",
        ]
        for student in ("small", "large"):
            old = {x["row"]: x for x in summarise(old_records, dataset, student, "tuned")}
            new = summarise(records, dataset, student, "tuned")
            for x in new:
                if x["row"] == "alone" or not x["gain"]:
                    continue
                before = old.get(x["row"])
                lines.append(f"| {STUDENT_TITLES[student]} | {x['label']} | "
                             f"{fmt(before['gain']) if before and before['gain'] else '-'} | {fmt(x['gain'])} |")
        lines.append("")
    return lines


def kd_gain_png(groups: dict[str, list[tuple[str, list[float]]]]) -> bytes:
    """Bars of kd's gain over the student alone per (data set, student), one bar per schedule length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / max(len(v) for v in groups.values())
    for i, name in enumerate(names):
        for j, (schedule, gains) in enumerate(groups[name]):
            mean, std = mean_std(gains)
            ax.bar(i + (j - 0.5) * width, 100 * mean, width, yerr=100 * std, capsize=3,
                   color=f"C{j}", label=schedule if i == 0 else None)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("kd gain over alone (points)")
    ax.set_title("kd at its tuned T and alpha: gain over the student alone, mean ± std over the seeds", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def longer_schedule(longer: dict[str, Any], main_lines: dict[tuple[str, str, str], list[dict[str, Any]]],
                    out: Path) -> tuple[list[str], list[str]]:
    """Target lines and a section for the record of a work folder with a longer MLP schedule (``--epochs``)."""
    records = longer["runs"]
    all_lines = tables(records)
    if not all_lines:
        return [], []
    epochs = "/".join(str(e) for e in sorted({r["epochs"] for r in records}))
    history = longer["commands"]
    section = [
        f"## {epochs} epochs instead of {SCHEDULE['epochs']}: the MLP students alone and with kd", "",
        f"The same students, trained for {epochs} epochs with everything else as above: validation split, best "
        f"and last epoch, the same teachers, and kd at the values tuned for {SCHEDULE['epochs']} epochs (not "
        f"searched again). `{longer['work']}` links this benchmark's teachers and copies its tuning records "
        "(`--reuse`). Records: `benchmarks/methods-longer.json`. Commands, in order: "
        + "; ".join(f"`{c}`" for found in history.values() for c in found)
        + f". Cost: {len(records)} runs, {_hours(sum(r['cpu_s'] for r in records))} of CPU time, not counted above.",
        "",
    ]
    bars: dict[str, list[tuple[str, list[float]]]] = {}
    for (dataset, student, _), lines in all_lines.items():
        section += [f"{dataset}, {STUDENT_TITLES[student]}:", "", *table_markdown(lines), ""]
        for label, source in ((f"{SCHEDULE['epochs']} epochs", main_lines.get((dataset, student, "tuned"), [])),
                              (f"{epochs} epochs", lines)):
            kd = next((x for x in source if x["row"] == "kd" and x["gain"]), None)
            if kd is not None:
                bars.setdefault(f"{dataset}\n{STUDENT_TITLES[student].split(',')[0]}", []).append((label, kd["gain"]))
    atomic_write_bytes(out / "methods-longer.png", kd_gain_png(bars))
    section += ["![kd's gain at both schedule lengths](benchmarks/methods-longer.png)", ""]
    return ["", f"At {epochs} epochs:", "", *targets(all_lines, {"small": epochs, "large": epochs})], section


# name -> (record file, the text published before its records were kept), both under docs/benchmarks/
SECTIONS = {name: (f"methods-{name}.json", f"methods-{name}.unrecorded.md")
            for name in ("longer", "earlier", "schedule")}
UNRECORDED_BANNER = (
    "> **No committed run records.** The numbers in this section were reported from runs kept only in a "
    "git-ignored work folder; their result files were never committed and are gone, so they cannot be "
    "checked against a record and stay here only as they were reported. Rerunning its commands writes "
    "`benchmarks/{record}`, and the report then builds this section from that record instead.")


def _slim(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "config"} for r in records]


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, default=float))


def export_records(work: Path, datasets: list[str], out: Path, command: str, *, earlier: Path | None = None,
                   longer: Path | None = None) -> None:
    """Copy the records of every finished run the report uses from the work folders into ``out``.

    A source that does not exist leaves its committed record file as it is: the report keeps what
    was recorded before."""
    out.mkdir(parents=True, exist_ok=True)
    history = commands(work, datasets) or {"all": [command]}
    records = [r for r in load_records(work) if r["dataset"] in datasets]
    tuning = [t for t in load_tuning(work) if t["dataset"] in datasets]
    teachers = {k: v for k, v in load_teachers(work).items() if k in datasets}
    if records or not (out / "methods.json").exists():  # an empty work folder never erases the records
        _write_json(out / "methods.json", {"commands": history, "machine": machine(), "teachers": teachers,
                                           "tuning": tuning, "runs": _slim(records)})
    if longer is not None and longer.exists() and load_records(longer):
        _write_json(out / SECTIONS["longer"][0], {"work": str(longer), "commands": commands(longer, list(DATASETS)),
                                                  "runs": _slim(load_records(longer))})
    if earlier is not None and earlier.exists():
        _write_json(out / SECTIONS["earlier"][0], {
            "work": str(earlier), "commands": commands(earlier, list(DATASETS)),
            "teachers": load_teachers(earlier), "runs": _slim(load_records(earlier))})
    if (work / "schedule.jsonl").exists():
        _write_json(out / SECTIONS["schedule"][0], {"path": str(work / "schedule.jsonl"),
                                                    "runs": load_runs(work / "schedule.jsonl")})


def _section(out: Path, name: str, build) -> list[str]:
    """A section from its record file, else the text published without records (under a banner)."""
    record, unrecorded = (out / f for f in SECTIONS[name])
    if record.exists():
        return build(json.loads(record.read_text()))
    if unrecorded.exists():
        text = unrecorded.read_text().rstrip("\n").splitlines()
        return [text[0], "", UNRECORDED_BANNER.format(record=record.name), *text[1:], ""]
    return []


def write(work: Path, datasets: list[str], docs: Path, command: str, *, quick: bool = False,
          earlier: Path | None = None, longer: Path | None = None) -> None:
    """Export the finished runs' records into ``docs/benchmarks/`` and rebuild the report from them."""
    export_records(work, datasets, docs / "benchmarks", command, earlier=earlier, longer=longer)
    render(docs, quick=quick)


def render(docs: Path, *, quick: bool = False) -> None:
    """Write ``METHODS_BENCHMARK.md`` and ``benchmarks/methods.{csv,png}`` from the committed records."""
    out = docs / "benchmarks"
    main = json.loads((out / "methods.json").read_text())
    records, tuning, teachers = main["runs"], main["tuning"], main["teachers"]
    all_lines = tables(records)
    buffer = io.StringIO()
    fields = ["dataset", "student", "column", "row", "label", "settings", "seed", "params", "accuracy",
              "last_accuracy", "agreement", "kl", "best_epoch", "epochs", "wall_s", "cpu_s"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(out / "methods.csv", buffer.getvalue())
    atomic_write_bytes(out / "methods.png", plot_png(all_lines))
    longer_targets: list[str] = []

    def longer_section(record: dict[str, Any]) -> list[str]:
        found, section = longer_schedule(record, all_lines, out)
        longer_targets.extend(found)
        return section

    sections = (_section(out, "longer", longer_section)
                + _section(out, "earlier", lambda record: teacher_comparison(record, records, teachers))
                + _section(out, "schedule", lambda record: schedule_section(record["runs"], record["path"])))
    text = markdown(records, tuning, teachers, all_lines, main["commands"], main["machine"], quick, sections,
                    longer_targets)
    atomic_write_text(docs / "METHODS_BENCHMARK.md", text)


def machine() -> str:
    import os

    return f"{os.cpu_count()}-core CPU ({cpu_model()}), no GPU, torch {torch.__version__}, 1 torch thread per process"


def _teacher_cost(teachers: dict[str, Any]) -> str:
    parts = [f"{name} {teacher_model(info)} {info['teacher']['train_wall_s'] / 60:.0f} min wall"
             for name, info in teachers.items() if info.get("teacher", {}).get("train_wall_s")]
    return "; ".join(parts) or "no record"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def markdown(records, tuning, teachers, all_lines, history: dict[str, list[str]], machine_text: str, quick: bool,
             comparison: list[str], more_targets: list[str] | None = None) -> str:
    run_cpu = sum(r["cpu_s"] for r in records)
    tune_cpu = sum(t.get("cpu_s", 0.0) for t in tuning)
    extra_cpu = sum(t.get("second", {}).get("cpu_s", 0.0) for t in teachers.values())
    run_wall = sum(r["wall_s"] for r in records)
    tune_wall = sum(t.get("wall_s", 0.0) for t in tuning)
    lines = ["# Distillation methods on MNIST and Fashion-MNIST", ""]
    if quick:
        lines += ["**Quick check (`--quick`): a 2,000-image subset, 1 epoch, 1 seed. These numbers only show "
                  "that the pipeline runs; they measure nothing.**", ""]
    lines += [
        "Commands, in the order they ran (with `KDISTILL_DATA` naming the folder holding `mnist/` and "
        "`fashion-mnist/`). They resume: a finished run is kept in the work folder and never rerun unless "
        "its row's settings changed (then the old run moves to `<work>/<ds>/superseded/`), and `--only` "
        "limits a command to the rows it names. Running a command again only rewrites this report.",
        "",
    ]
    for name, found in history.items():
        lines += [f"{name}:", ""] + [f"{i}. `{c}`" for i, c in enumerate(found, 1)] + [""]
    lines += [
        f"Machine: {machine_text}; the machine was shared with other jobs, so wall times run well above CPU "
        f"times. Cost of everything in this report: {_hours(run_cpu + tune_cpu + extra_cpu)} of CPU time "
        f"({_hours(run_cpu)} runs, {_hours(tune_cpu)} tuning, {_hours(extra_cpu)} second teachers), "
        f"{_hours(run_wall + tune_wall)} wall time; {len(records)} runs. The main teachers "
        "(trained before, by `benchmarks/methods/teacher-<ds>.yaml`) are not counted: " + _teacher_cost(teachers) + ".",
        "",
    ]
    lines += setup_text(teachers, records)
    schedule = {"small": SCHEDULE["epochs"], "large": SCHEDULE["epochs"], "cnn": SCHEDULE["cnn_epochs"]}
    target_lines = targets(all_lines, schedule) + (more_targets or [])
    if target_lines:
        lines += ["## Targets", "", *target_lines, ""]
    for dataset in DATASETS:
        for student in STUDENT_ORDER:
            for column in COLUMNS:
                table = all_lines.get((dataset, student, column))
                if not table:
                    continue
                lines += [f"## {dataset}: {STUDENT_TITLES[student]}: {COLUMN_TITLES[column]}", ""]
                lines += table_markdown(table)
                lines.append("")
    lines += comparison
    lines += ["![gain over the student alone](benchmarks/methods.png)", ""]
    lines += tuning_table(tuning)
    lines += method_notes()
    lines += [not_run(records), "", rows_missing(records)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Rebuild METHODS_BENCHMARK.md from the run records committed "
                                                 "in <docs>/benchmarks/ (no work folder needed).")
    parser.add_argument("--docs", default=str(Path(__file__).resolve().parent.parent / "docs"))
    args = parser.parse_args()
    docs = Path(args.docs)
    if not (docs / "benchmarks" / "methods.json").is_file():
        print(f"no run records at {docs / 'benchmarks' / 'methods.json'}", file=sys.stderr)
        return 2
    render(docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
