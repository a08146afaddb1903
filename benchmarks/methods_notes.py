"""The fixed prose of the methods benchmark report: set-up, tuning table, notes, what was not run."""

from __future__ import annotations

from typing import Any

from methods_rows import CRD_NEGATIVES, DKD_WARMUP, SCHEDULE, SEARCH, row_uses

STUDENT_SHORT = {"small": "mlp [32]", "large": "mlp [128]", "cnn": "cnn"}


def convergence(records: list[dict[str, Any]]) -> str:
    """How much the students alone still moved on validation over their last 5 epochs."""
    parts = []
    for dataset in ("fashion-mnist", "mnist"):
        for student in ("small", "large", "cnn"):
            curves = [r["val_history"] for r in records if r["dataset"] == dataset and r["student"] == student
                      and r["row"] == "alone" and len(r.get("val_history") or []) > 5]
            if curves:
                moves = [100 * (c[-1] - c[-6]) for c in curves]
                parts.append(f"{dataset} {STUDENT_SHORT[student]}: {min(moves):+.2f} to {max(moves):+.2f}")
    if not parts:
        return ""
    return ("Change of the students' (alone) validation accuracy over their last 5 epochs, in points, "
            "across seeds: " + "; ".join(parts) + ".")


def _run_epochs(records: list[dict[str, Any]], students: tuple[str, ...], default: int) -> str:
    """The schedule length(s) the finished runs of these students used (``default`` before any ran)."""
    found = sorted({r["epochs"] for r in records if r["student"] in students and r.get("epochs")})
    return "/".join(map(str, found)) if found else str(default)


def _epochs(teachers: dict[str, Any], which: str) -> str:
    found = sorted({str(t.get(which, {}).get("epochs", "?")) for t in teachers.values()})
    return "/".join(found) or "?"


def teacher_model(info: dict[str, Any]) -> str:
    """The main teacher's model name in a data set's teacher record."""
    return info.get("teacher", {}).get("model", "cnn-medium")  # records from before the field existed


def _teacher_names(teachers: dict[str, Any]) -> str:
    parts = []
    for name, info in teachers.items():
        t = info.get("teacher", {})
        params = f"{t['params']:,} parameters, " if "params" in t else ""
        parts.append(f"`{teacher_model(info)}` on {name} ({params}{t.get('epochs', '?')} epochs)")
    return "; ".join(parts) or "none yet"


def setup_text(teachers: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Set-up",
        "",
        "Data: the full MNIST and Fashion-MNIST sets (60,000 training and 10,000 test images each). Every run "
        "holds out the same 10% of the training set per seed (`train.val_fraction: 0.1`) to pick its best "
        "epoch, and tuning scores trials on that split; the test set is used for nothing but the tables.",
        "",
        "Teachers: " + _teacher_names(teachers) + ", AdamW lr 2e-3, batch 128, random 2-pixel crops (and "
        "left-right flips on Fashion-MNIST), trained once per data set by `kdistill train "
        "benchmarks/methods/teacher-<ds>.yaml` and shared by every row. The multi-teacher row adds "
        "`hinton-teacher` (784-1200-1200-10, dropout 0.5, the same augmentation, "
        f"{_epochs(teachers, 'second')} epochs, AdamW lr 1e-3); the early-stopped-teacher row uses epoch 4 "
        "(`epoch-003`) of the same teacher run.",
        "",
        "| data set | teacher | test accuracy (%) | early-stopped teacher, epoch 4 (%) | hinton-teacher (%) |",
        "|---|---|---|---|---|",
    ]
    for name, info in teachers.items():
        early = info.get("early", {}).get("accuracy")
        second = info.get("second", {}).get("accuracy")
        teacher = info.get("teacher", {}).get("accuracy")
        lines.append(f"| {name} | {teacher_model(info)} | {'still training' if teacher is None else f'{100 * teacher:.2f}'} | "
                     f"{'-' if early is None else f'{100 * early:.2f}'} | "
                     f"{'-' if second is None else f'{100 * second:.2f}'} |")
    lines += [
        "",
        "Students, trained without augmentation (so the teacher's logits and features come from the "
        "teacher cache): `mlp-simple` with hidden [32] (25,450 parameters) and with hidden [128] "
        f"(101,770), {_run_epochs(records, ('small', 'large'), SCHEDULE['epochs'])} epochs; `cnn-simple` with "
        f"widths [16, 32, 64] (24,058), {_run_epochs(records, ('cnn',), SCHEDULE['cnn_epochs'])} epochs, for "
        "the methods that need conv feature maps (at, nst). AdamW lr "
        f"{SCHEDULE['lr']:g}, weight decay {SCHEDULE['weight_decay']:g}, batch {SCHEDULE['batch_size']}, "
        "cosine decay; "
        "the same schedule for every row, so rows differ only in the loss (or scheme). Seeds 0, 1, 2: seed "
        "k fixes the student's initial weights, the validation split and the batch order, the same for "
        "every row. " + convergence(records) + " (Per-epoch validation curves: `methods.json`.)",
        "",
        "Columns: **test acc., best epoch** is the checkpoint with the best validation accuracy "
        "(`best.safetensors`), **last epoch** is `last.safetensors`; **gain** is the paired difference to "
        "the student alone of the same seed (mean ± std over seeds); **agreement** and **KL** "
        "(predictive KL(teacher‖student) at T = 1, nats) are measured against the data set's teacher on "
        "the test set, for every row (also rows whose own teacher is another model). CPU seconds include "
        "every model a scheme trains; the teacher's forward pass over the training set is paid by the "
        "first run that needs it and shared with later runs of the same process (same weights, same "
        "inputs, same outputs; `benchmarks/methods_memo.py`).",
        "",
    ]
    return lines


def _own_tuning(tuning: list[dict[str, Any]]) -> str:
    own = sorted({(t["dataset"], t["method"]) for t in tuning if t["student"] == "large"})
    if not own:
        return "mlp-simple [128] and the cnn student reuse these values."
    listed = ", ".join(f"{m} on {d}" for d, m in own)
    return (f"mlp-simple [128] is tuned on its own for {listed} and reuses the small student's values for "
            "the other methods; the cnn student reuses the small student's values.")


def tuning_table(tuning: list[dict[str, Any]]) -> list[str]:
    if not tuning:
        return []
    lines = [
        "## Tuned settings",
        "",
        "`kdistill tune` (`kdistill.tune.run_tune`) per method and data set on mlp-simple [32], searching "
        "only the method's own knobs (`tune.search` below; learning rate, schedule and seed fixed) and "
        "maximising validation accuracy; median pruning after the first epoch, except for kd on Fashion-MNIST (the "
        "pruning column): kd's early epochs do not predict its last ones. A first, pruned Fashion-MNIST "
        "search stopped 7 and 10 of the 12 kd trials (small and large student), among them, for the large "
        "student, the small student's best setting; it was redone without pruning. Optuna's TPE sampler "
        "draws its first 10 trials at random, so with the trial counts below this is (nearly) a random "
        "search. "
        + _own_tuning(tuning) + " Schemes use the tuned kd values; kd + crd uses the tuned kd and crd "
        "values together.",
        "",
        "| data set | student | method | searched | trials | pruning | best validation accuracy (%) | chosen "
        "| CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tuning:
        searched = "; ".join(f"{k.split('.')[-1] if 'weight' not in k else 'weight'} "
                             f"{v['low']:g}-{v['high']:g}{' (log)' if v.get('log') else ''}"
                             for k, v in t.get("search", SEARCH.get(t["method"], {})).items())
        chosen = ", ".join(f"{k.split('.')[-1] if 'weight' not in k else 'weight'}={v:.3g}"
                           for k, v in t["best_params"].items())
        lines.append(f"| {t['dataset']} | {STUDENT_SHORT.get(t['student'], t['student'])} | {t['method']} | "
                     f"{searched} | {t['finished']} | {t.get('pruner', 'median')} | {100 * t['best_value']:.2f} | {chosen} | "
                     f"{t.get('cpu_s', 0):.0f} |")
    return lines + [""]


def method_notes() -> list[str]:
    return [
        "## Notes on the rows",
        "",
        "- Output methods (kd, dkd, regression) and feature methods: feature methods are CE + weight x "
        "loss (`distill.alpha: 0`), as in RepDistiller, on the penultimate features (`features` of the "
        "MLP, the last conv block of the teacher); FitNets' regressor is a linear map to the teacher's "
        "128x3x3 map, trained with the student.",
        "- Papers' defaults: RepDistiller (Tian et al. 2020, `scripts/run_cifar_distill.sh`) and mdistiller "
        "(`mdistiller/engine/cfg.py`): KD T = 4, CE 0.1 + KD 0.9; DKD alpha 1, beta 8, T = 4; FitNets "
        "100 (kdistill's hint loss is half the MSE, so weight 200); PKT 30000; RKD 1 (distance 25, "
        "angle 50); SP 3000; CRD 0.8; AT 1000; NST 50; CRD + KD = CE + KD + 0.8 CRD. Schemes use KD at "
        "T = 4, alpha = 0.9 in that column. Regression (logit MSE) has no published CE + MSE weight; 1 "
        "is used.",
        f"- Deviations forced by the CPU: CRD draws {CRD_NEGATIVES:,} negatives per sample (the papers "
        f"16,384); DKD's warm-up of 20 of 240 epochs is scaled to {DKD_WARMUP} of {SCHEDULE['epochs']}.",
        "- DML trains two peers with no teacher; its row (like the student alone) involves no KD "
        "settings and is the same run in both columns.",
        "- Noisy student (Xie et al. 2020) here is equal-size self-training: the teacher is the same "
        "student architecture trained alone (same seed), the student is noised with dropout 0.3 and "
        "input noise 0.1; there is no extra unlabeled data.",
        "- Transfer rows train on inputs without labels (alpha forced to 1): MUNGE x1 (Bucila et al. "
        "2006) pseudo-samples of the training images, or 20,000 images of the other data set, labelled "
        "by the teacher's soft outputs.",
        "- at and nst match the 7x7 (`features.1`) and 3x3 (`features.2`) block outputs of student and "
        "teacher, one loss per pair, as RepDistiller sums them over blocks.",
        "",
    ]


# the tables the benchmark is designed to fill: (student, column); the large student has no papers' column
PLANNED = (("small", "tuned"), ("small", "paper"), ("large", "tuned"), ("cnn", "tuned"), ("cnn", "paper"))
COLUMN_SHORT = {"tuned": "tuned", "paper": "papers' defaults"}


def rows_missing(records: list[dict[str, Any]], seeds: int = 3) -> str:
    """The planned rows with fewer than ``seeds`` finished seeds, per data set, student and column."""
    from methods_rows import PAPER, cnn_rows, paper_rows

    mlp_slugs = [row.slug for row in paper_rows("", 0, "")]
    cnn = cnn_rows({"kd": PAPER["kd"]})
    done: dict[tuple[str, str, str, str], int] = {}
    for r in records:
        key = (r["dataset"], r["student"], r["column"], r["row"])
        done[key] = done.get(key, 0) + 1
    parts, listed = [], set()
    for dataset in ("fashion-mnist", "mnist"):
        for student, column in PLANNED:
            if student == "cnn":
                slugs = [(row.slug, row.column) for row in cnn if row.column in (column, "shared")]
            else:
                slugs = [(slug, "shared" if slug in ("alone", "dml") else column) for slug in mlp_slugs]
            short = []
            for slug, col in slugs:
                key = (dataset, student, col, slug)
                n = done.get(key, 0)
                if n < seeds and key not in listed:  # a shared run (alone, dml) is listed once
                    listed.add(key)
                    short.append(f"{slug} ({n} of {seeds} seeds)" if n else slug)
            if short:
                parts.append(f"{dataset}, {STUDENT_SHORT[student]}, {COLUMN_SHORT[column]}: {', '.join(short)}")
    if not parts:
        return f"Every planned row has {seeds} seeds."
    return f"Planned rows not run yet (or with fewer than {seeds} seeds): " + "; ".join(parts) + "."


def not_run(records: list[dict[str, Any]]) -> str:
    from kdistill.registry import METHODS
    from kdistill.schemes import scheme_names

    # from the row names, which the committed records keep (their configs stay in the work folder)
    uses = row_uses()
    used = set().union(*(uses.get(r["row"], set()) for r in records))
    elsewhere = {"attention-maps", "hidden-states", "crosskd", "feat-imitation", "pred-mimic", "variational"}
    missing = sorted((set(METHODS.names()) | set(scheme_names())) - used - elsewhere)
    note = (" Measured elsewhere: crosskd, feat-imitation and pred-mimic distil detectors (docs/DETECTION.md), "
            "variational is a student option (docs/VARIATIONAL.md), and the transformer methods "
            "(attention-maps, hidden-states) need a transformer teacher and student (docs/NLP.md).")
    if not missing:
        return "Methods not run: none of the image methods and schemes." + note
    return f"Methods not run yet: {', '.join(missing)}." + note
