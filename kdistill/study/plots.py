"""The study's figures, drawn with matplotlib from the rows of ``results.json``.

Each function takes the rows and returns PNG bytes; :data:`PLOTS` maps file
names to (title, function). Sizes are bytes of the saved file on a log axis.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]

COLORS = {
    "baseline": "#1f77b4", "dynamic-int8": "#ff7f0e", "static-int8": "#d62728",
    "prune-unstructured": "#9467bd", "prune-structured": "#8c564b", "distilled": "#2ca02c",
    "distilled+dynamic-int8": "#17becf", "variational": "#e377c2",
}
MARKERS = {"mlp": "o", "cnn": "s", "resnet": "^"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _plt().close(fig)
    return buffer.getvalue()


def ok_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.get("status") == "ok" and r.get("accuracy") is not None]


def pareto_front(rows: list[Row]) -> list[Row]:
    """Rows no other row beats on both size (smaller) and accuracy (higher), by size."""
    front: list[Row] = []
    for r in sorted(ok_rows(rows), key=lambda r: (r["size_bytes"], -r["accuracy"])):
        if not front or r["accuracy"] > front[-1]["accuracy"]:
            front.append(r)
    return front


def _size_axis(ax) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (bytes, log scale)")
    ax.grid(True, which="both", alpha=0.3)


def accuracy_vs_size(rows: list[Row]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 6.2))
    data = ok_rows(rows)
    for technique, color in COLORS.items():
        for fam, marker in MARKERS.items():
            pts = [r for r in data if r["technique"] == technique and r["family"] == fam]
            if pts:
                ax.scatter([r["size_bytes"] for r in pts], [100 * r["accuracy"] for r in pts], c=color,
                           marker=marker, s=55, alpha=0.85, edgecolors="black", linewidths=0.4)
    front = pareto_front(rows)
    ax.plot([r["size_bytes"] for r in front], [100 * r["accuracy"] for r in front], "k--", lw=1.2,
            drawstyle="steps-post", label="Pareto front")
    for r in front:
        ax.annotate(r["run"].split("/", 1)[1] if r["technique"] == "baseline" else r["run"],
                    (r["size_bytes"], 100 * r["accuracy"]), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=t) for t, c in COLORS.items()
               if any(r["technique"] == t for r in data)]
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="", label=f) for f, m in MARKERS.items()]
    handles += [plt.Line2D([], [], color="black", ls="--", label="Pareto front")]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    _size_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    _zoom(ax, data)
    ax.set_title("Model Accuracy vs Size")
    return _png(fig)


def _zoom(ax, data: list[Row]) -> None:
    # a collapsed model (10% accuracy) would squash the interesting band; show it at the edge
    accs = sorted(100 * r["accuracy"] for r in data)
    if accs:
        low = accs[len(accs) // 10]
        bottom = max(0.0, low - 8)
        ax.set_ylim(bottom, min(100.0, accs[-1] + 2))
        # a bar below the visible band would vanish: label it at the bottom edge instead
        for bar in ax.patches:
            height = bar.get_height()
            if height < bottom:
                ax.annotate(f"{height:.0f}%\u2193", (bar.get_x() + bar.get_width() / 2, bottom),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=7, color="#b00000")


def _empty(title: str, what: str) -> bytes:
    fig, ax = _plt().subplots(figsize=(8, 3))
    ax.text(0.5, 0.5, f"no {what} finished yet", ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    ax.set_title(title)
    return _png(fig)


def distillation_impact(rows: list[Row]) -> bytes:
    """Per student: trained alone vs distilled from each teacher."""
    plt = _plt()
    data = ok_rows(rows)
    if not any(r["technique"] == "distilled" for r in data):
        return _empty("Impact of Knowledge Distillation", "distilled student")
    base = {r["model"]: r for r in data if r["technique"] == "baseline"}
    kd = [r for r in data if r["technique"] == "distilled"]
    students = sorted({r["model"] for r in kd}, key=lambda m: base.get(m, {}).get("params", 0))
    teachers = sorted({r["source"] for r in kd}, key=lambda m: base.get(m, {}).get("params", 0))
    fig, ax = plt.subplots(figsize=(10, 5.2))
    width = 0.8 / (len(teachers) + 1)
    for i, s in enumerate(students):
        if s in base:
            ax.bar(i, 100 * base[s]["accuracy"], width, color="#bbbbbb", edgecolor="black",
                   label="trained alone" if i == 0 else None)
        for j, t in enumerate(teachers):
            r = next((r for r in kd if r["model"] == s and r["source"] == t), None)
            if r:
                ax.bar(i + (j + 1) * width, 100 * r["accuracy"], width,
                       color=plt.cm.viridis(j / max(1, len(teachers))), edgecolor="black",
                       label=f"distilled from {t}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(students))], students)
    ax.set_ylabel("test accuracy (%)")
    _zoom(ax, [base[s] for s in students if s in base] + kd)
    ax.grid(True, axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))  # one legend entry per teacher
    ax.legend(seen.values(), seen.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Impact of Knowledge Distillation")
    return _png(fig)


def teacher_vs_student(rows: list[Row]) -> bytes:
    """Teacher x student matrix of distilled accuracy minus the teacher's accuracy."""
    plt = _plt()
    data = ok_rows(rows)
    base = {r["model"]: r for r in data if r["technique"] == "baseline"}
    kd = [r for r in data if r["technique"] == "distilled"]
    if not kd:
        return _empty("Teacher vs Distilled Student", "distilled student")
    teachers = sorted({r["source"] for r in kd}, key=lambda m: base.get(m, {}).get("params", 0))
    students = sorted({r["model"] for r in kd}, key=lambda m: base.get(m, {}).get("params", 0))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(students) + 3), max(3.5, 0.8 * len(teachers) + 2)))
    import numpy as np

    grid = np.full((len(teachers), len(students)), np.nan)
    for r in kd:
        t, s = teachers.index(r["source"]), students.index(r["model"])
        grid[t, s] = 100 * (r["accuracy"] - base[r["source"]]["accuracy"]) if r["source"] in base else np.nan
    limit = max(1.0, float(np.nanmax(np.abs(grid)))) if kd else 1.0
    image = ax.imshow(grid, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    for t in range(len(teachers)):
        for s in range(len(students)):
            r = next((r for r in kd if r["source"] == teachers[t] and r["model"] == students[s]), None)
            if r:
                size = base[teachers[t]]["size_bytes"] / r["size_bytes"] if teachers[t] in base else float("nan")
                ax.text(s, t, f"{100 * r['accuracy']:.1f}%\n{grid[t, s]:+.1f} pt\n{size:.0f}x smaller",
                        ha="center", va="center", fontsize=8,
                        color="white" if abs(grid[t, s]) > 0.6 * limit else "black")
    ax.set_xticks(range(len(students)), students)
    ax.set_yticks(range(len(teachers)),
                  [f"{t}\n({100 * base[t]['accuracy']:.1f}%)" if t in base else t for t in teachers])
    ax.set_xlabel("student")
    ax.set_ylabel("teacher (its accuracy)")
    fig.colorbar(image, ax=ax, label="student minus teacher accuracy (points)")
    ax.set_title("Teacher vs Distilled Student")
    return _png(fig)


def _per_model(rows: list[Row], techniques: list[str]) -> tuple[list[str], dict[tuple[str, str], Row]]:
    data = ok_rows(rows)
    base = {r["model"]: r for r in data if r["technique"] == "baseline"}
    models = sorted(base, key=lambda m: base[m]["params"])
    table = {(r["model"], r["technique"] + "|" + (r.get("setting") or "")): r for r in data
             if r["technique"] in techniques and r["source"] == r["model"]}
    return models, table


def quantization_impact(rows: list[Row]) -> bytes:
    plt = _plt()
    models, table = _per_model(rows, ["baseline", "dynamic-int8", "static-int8"])
    variants = [("baseline|", "float32", COLORS["baseline"]),
                ("dynamic-int8|int8", "dynamic int8", COLORS["dynamic-int8"]),
                ("static-int8|int8", "static int8", COLORS["static-int8"])]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    width = 0.27
    for j, (key, label, color) in enumerate(variants):
        xs = [i + j * width for i, m in enumerate(models) if (m, key) in table]
        top.bar(xs, [100 * table[(m, key)]["accuracy"] for m in models if (m, key) in table], width,
                color=color, edgecolor="black", label=label)
        bottom.bar(xs, [table[(m, key)]["size_bytes"] for m in models if (m, key) in table], width,
                   color=color, edgecolor="black", label=label)
    top.set_ylabel("test accuracy (%)")
    _zoom(top, [r for r in table.values()])
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    top.grid(True, axis="y", alpha=0.3)
    top.set_title("Impact of Quantization")
    bottom.set_yscale("log")
    bottom.set_ylabel("size on disk (bytes, log scale)")
    bottom.grid(True, axis="y", which="both", alpha=0.3)
    bottom.set_xticks([i + width for i in range(len(models))], models, rotation=20)
    for i, m in enumerate(models):  # the saving, written under each model
        if (m, "baseline|") in table:
            full = table[(m, "baseline|")]["size_bytes"]
            ratios = [f"{100 * table[(m, k)]['size_bytes'] / full:.0f}%" for k, _, _ in variants[1:]
                      if (m, k) in table]
            bottom.text(i + width, full * 1.15, " / ".join(ratios), ha="center", fontsize=8)
    sizes = [r["size_bytes"] for r in table.values()]
    if sizes:
        bottom.set_ylim(min(sizes) / 1.5, max(sizes) * 3)
    bottom.set_title("file size; labels: dynamic / static int8 as % of float32", fontsize=9)
    return _png(fig)


def pruning_impact(rows: list[Row]) -> bytes:
    plt = _plt()
    data = ok_rows(rows)
    base = {r["model"]: r for r in data if r["technique"] == "baseline"}
    models = sorted(base, key=lambda m: base[m]["params"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    cmap = plt.cm.tab10
    for i, m in enumerate(models):
        pts = sorted([r for r in data if r["model"] == m and r["technique"] == "prune-unstructured"
                      and r["source"] == m], key=lambda r: float(r["setting"].split()[-1]))
        xs = [0.0] + [float(r["setting"].split()[-1]) for r in pts]
        ys = [100 * base[m]["accuracy"]] + [100 * r["accuracy"] for r in pts]
        left.plot(xs, ys, marker=MARKERS.get(base[m]["family"], "o"), color=cmap(i % 10), label=m)
        for r in [r for r in data if r["model"] == m and r["technique"] == "prune-structured"]:
            right.annotate("", (r["size_bytes"], 100 * r["accuracy"]),
                           (base[m]["size_bytes"], 100 * base[m]["accuracy"]),
                           arrowprops={"arrowstyle": "->", "color": cmap(i % 10)})
            right.scatter([r["size_bytes"]], [100 * r["accuracy"]], color=cmap(i % 10), marker="x")
        for r in pts:
            right.scatter([r["size_bytes"]], [100 * r["accuracy"]], color=cmap(i % 10), marker=".", s=60)
        right.scatter([base[m]["size_bytes"]], [100 * base[m]["accuracy"]], color=cmap(i % 10),
                      marker=MARKERS.get(base[m]["family"], "o"), edgecolors="black", s=60)
    left.set_xlabel("unstructured sparsity (fraction of weights zeroed)")
    left.set_ylabel("test accuracy (%)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    left.set_title("unstructured magnitude pruning")
    _size_axis(right)
    right.set_ylabel("test accuracy (%)")
    right.set_title("size: dense (big marker), sparse file (dot), structured (x, arrow)", fontsize=9)
    fig.suptitle("Impact of Pruning")
    return _png(fig)


def accuracy_vs_nonzero(rows: list[Row]) -> bytes:
    """Accuracy against non-zero parameters: magnitude pruning (a line per model) vs variational students.

    Dense baselines and distilled students are drawn at their full parameter
    count; each variational student at each threshold is one star, joined to
    its dense distilled peer (same teacher and student) by a dotted line.
    """
    plt = _plt()
    data = ok_rows(rows)
    sparse = [r for r in data if r["technique"] in ("prune-unstructured", "variational")]
    if not sparse:
        return _empty("Accuracy vs Non-zero Parameters", "pruned or variational model")
    fig, ax = plt.subplots(figsize=(10, 6))
    base = {r["model"]: r for r in data if r["technique"] == "baseline"}
    cmap = plt.cm.tab10
    models = sorted({r["model"] for r in sparse}, key=lambda m: base.get(m, {}).get("params", 0))
    for i, m in enumerate(models):
        color = cmap(i % 10)
        pts = sorted([r for r in data if r["model"] == m and r["technique"] == "prune-unstructured"],
                     key=lambda r: -r["nonzero_params"])
        if m in base:
            pts = [base[m], *pts]
        if pts:
            ax.plot([r["nonzero_params"] for r in pts], [100 * r["accuracy"] for r in pts], marker="o",
                    color=color, lw=1, ms=5, label=f"{m}: trained alone, then magnitude-pruned")
        for r in [r for r in data if r["model"] == m and r["technique"] == "variational"]:
            ax.scatter([r["nonzero_params"]], [100 * r["accuracy"]], marker="*", s=180, color=color,
                       edgecolors="black", linewidths=0.6, zorder=3)
            ax.annotate(f"{r['source']}, {r['setting']}", (r["nonzero_params"], 100 * r["accuracy"]),
                        fontsize=7, xytext=(6, 4), textcoords="offset points")
            peer = next((p for p in data if p["technique"] == "distilled" and p["model"] == m
                         and p["source"] == r["source"]), None)
            if peer:
                ax.scatter([peer["nonzero_params"]], [100 * peer["accuracy"]], marker="D", s=45,
                           color=color, edgecolors="black", linewidths=0.6, zorder=3)
                ax.plot([peer["nonzero_params"], r["nonzero_params"]],
                        [100 * peer["accuracy"], 100 * r["accuracy"]], ":", color=color, lw=1)
    handles, labels = ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="grey", marker="*", ms=12, ls="", label="variational student"),
                plt.Line2D([], [], color="grey", marker="D", ls="", label="dense distilled student")]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("non-zero parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    _zoom(ax, sparse + list(base.values()))
    ax.set_title("Accuracy vs Non-zero Parameters: Magnitude Pruning vs Variational Student")
    return _png(fig)


PLOTS: dict[str, tuple[str, Callable[[list[Row]], bytes]]] = {
    "accuracy_vs_size.png": ("Model Accuracy vs Size", accuracy_vs_size),
    "distillation_impact.png": ("Impact of Knowledge Distillation", distillation_impact),
    "teacher_vs_student.png": ("Teacher vs Distilled Student", teacher_vs_student),
    "quantization_impact.png": ("Impact of Quantization", quantization_impact),
    "pruning_impact.png": ("Impact of Pruning", pruning_impact),
    "accuracy_vs_nonzero.png": ("Accuracy vs Non-zero Parameters: Pruning vs Variational Student",
                                accuracy_vs_nonzero),
}
