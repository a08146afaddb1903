"""The rows of the methods benchmark: students, search spaces, tuned and papers' settings.

Papers' defaults (the "paper" column) are those of the two public benchmark
code bases most tables cite, Tian et al.'s RepDistiller
(``scripts/run_cifar_distill.sh``: CE weight 1 plus beta x the method's loss)
and mdistiller (``mdistiller/engine/cfg.py``):

============  =====================================================================
kd            T = 4, CE weight 0.1, KD weight 0.9 (Hinton et al. 2015 as run by both)
dkd           CE + DKD with alpha = 1, beta = 8, T = 4, warm-up 20 of 240 epochs
fitnets       beta = 100 on the hint MSE, one stage (RepDistiller's ``hint``)
pkt           beta = 30000
rkd           beta = 1 (distance 25, angle 50)
sp            beta = 3000
crd           beta = 0.8, feat_dim 128, tau 0.07, momentum 0.5 (16384 negatives)
kd + crd      CE + KD + 0.8 CRD (RepDistiller ``-a 1 -b 0.8``)
at / nst      beta = 1000 / 50, summed over the intermediate block outputs
============  =====================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# one schedule for every row of a student (AdamW, cosine decay, no augmentation)
SCHEDULE = {"epochs": 15, "cnn_epochs": 10, "batch_size": 128, "lr": 2e-3, "weight_decay": 5e-4}

STUDENTS: dict[str, dict[str, Any]] = {
    "small": {"model": "mlp-simple", "options": {"hidden": [32]}},
    "large": {"model": "mlp-simple", "options": {"hidden": [128]}},
    "cnn": {"model": "cnn-simple", "options": {"widths": [16, 32, 64]}},
}
STUDENT_NAMES = {"small": "mlp-simple [32] (25,450 parameters)",
                 "large": "mlp-simple [128] (101,770 parameters)",
                 "cnn": "cnn-simple [16, 32, 64] (24,058 parameters)"}

# the papers' 16384 negatives gather 16384 bank rows per sample: minutes per epoch on one CPU core
CRD_NEGATIVES = 256
CRD = {"num_negatives": CRD_NEGATIVES}
DKD_WARMUP = round(20 / 240 * SCHEDULE["epochs"])  # the paper's 20 of 240 epochs, scaled
FEATURE_METHODS = ("fitnets", "pkt", "rkd", "sp", "crd")

PAPER: dict[str, dict[str, float]] = {
    "kd": {"temperature": 4.0, "alpha": 0.9},
    "dkd": {"temperature": 4.0, "beta": 8.0},
    "regression": {"weight": 1.0},
    # kdistill's hint loss is 1/2 x MSE, so weight 200 is RepDistiller's beta = 100 on the MSE
    "fitnets": {"weight": 200.0},
    "pkt": {"weight": 30000.0},
    "rkd": {"weight": 1.0},
    "sp": {"weight": 3000.0},
    "crd": {"weight": 0.8},
}

# what `kdistill tune` searches per method (tune.search; lr, schedule and seed stay fixed)
SEARCH: dict[str, dict[str, dict[str, Any]]] = {
    "kd": {"distill.temperature": {"low": 1.0, "high": 16.0, "log": True},
           "distill.alpha": {"low": 0.1, "high": 1.0}},
    "dkd": {"distill.temperature": {"low": 1.0, "high": 16.0, "log": True},
            "distill.methods.0.options.beta": {"low": 0.5, "high": 16.0, "log": True}},
    "regression": {"distill.methods.0.weight": {"low": 0.01, "high": 10.0, "log": True}},
    "fitnets": {"distill.methods.0.weight": {"low": 2.0, "high": 2000.0, "log": True}},
    "pkt": {"distill.methods.0.weight": {"low": 300.0, "high": 300000.0, "log": True}},
    "rkd": {"distill.methods.0.weight": {"low": 0.01, "high": 10.0, "log": True}},
    "sp": {"distill.methods.0.weight": {"low": 30.0, "high": 30000.0, "log": True}},
    "crd": {"distill.methods.0.weight": {"low": 0.01, "high": 10.0, "log": True}},
}
# kd's settings change how fast the student learns, so a trial's early epochs say little about its end:
# the median pruner (after epoch 1) stopped 7-10 of 12 kd trials, among them the small student's best
PRUNER = {"kd": "none"}
SHORT = {"distill.temperature": "temperature", "distill.alpha": "alpha",
         "distill.methods.0.options.beta": "beta", "distill.methods.0.weight": "weight"}


def method_section(method: str, v: dict[str, float]) -> dict[str, Any]:
    """The distill section of one method's row at values ``v``."""
    if method == "kd":
        return {"alpha": v["alpha"], "temperature": v["temperature"], "method": "kd"}
    if method == "dkd":
        return {"alpha": 0.0, "temperature": v["temperature"], "methods": [
            {"name": "dkd", "weight": 1.0, "options": {"alpha": 1.0, "beta": v["beta"],
                                                       "warmup_epochs": DKD_WARMUP}}]}
    options = CRD if method == "crd" else {}
    return {"alpha": 0.0, "methods": [{"name": method, "weight": v["weight"], "options": dict(options)}]}


def tune_base(method: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A tuning config: the row's structure at the papers' values, and the method's search space."""
    raw = json.loads(json.dumps(raw))
    raw["distill"] = method_section(method, PAPER[method])
    # a sampler seed per method, so the methods' random draws are not the same quantiles of their ranges
    raw["tune"] = {"search": SEARCH[method], "pruner": PRUNER.get(method, "median"),
                   "seed": list(SEARCH).index(method)}
    return raw


def short_values(best_params: dict[str, Any]) -> dict[str, float]:
    return {SHORT[k]: float(v) for k, v in best_params.items()}


def describe(method: str, v: dict[str, float]) -> str:
    if method == "kd":
        return f"T={v['temperature']:.3g}, alpha={v['alpha']:.2f}"
    if method == "dkd":
        return f"T={v['temperature']:.3g}, beta={v['beta']:.3g}"
    return f"weight={v['weight']:.3g}"


@dataclass
class Row:
    slug: str
    label: str
    build: Callable[[Any, str, int], dict[str, Any]]  # (data set, student, seed) -> config sections
    settings: str = ""
    kind: str = "distill"
    column: str | None = None  # "shared": one run serves both columns (no KD settings involved)
    needs_alone: bool = False
    uses: tuple[str, ...] = field(default_factory=tuple)  # registered methods / schemes it runs

    def overrides(self, ds: Any, student: str, seed: int) -> dict[str, Any]:
        return self.build(ds, student, seed)


def _const(sections: dict[str, Any]) -> Callable[[Any, str, int], dict[str, Any]]:
    return lambda ds, student, seed: json.loads(json.dumps(sections))


def alone_row() -> Row:
    return Row("alone", "student alone", _const({}), "cross-entropy only", kind="alone", column="shared")


def dml_row() -> Row:
    return Row("dml", "dml (2 peers, no teacher)", lambda ds, student, seed: {
        "teacher": None, "distill": {"scheme": {"name": "dml"}}}, "KL at T=1 between peers",
        column="shared", uses=("dml",))


def _scheme(kd: dict[str, float], name: str, **options: Any) -> dict[str, Any]:
    return {"alpha": kd["alpha"], "temperature": kd["temperature"],
            "scheme": {"name": name, "options": options}}


def rows_for(values: dict[str, dict[str, float]], other: str, teacher_epochs: int, teacher: str) -> list[Row]:
    """Every MLP row at ``values`` (per method; schemes use the kd values); rows whose values are
    missing (a method not tuned yet) are left out."""
    rows = [alone_row()]
    for method in ("kd", "dkd", "regression", *FEATURE_METHODS):
        if method in values:
            label = {"regression": "regression (logit MSE)"}.get(method, method)
            rows.append(Row(method, label, _const({"distill": method_section(method, values[method])}),
                            describe(method, values[method]), uses=(method,)))
    if "kd" not in values:
        return rows + [dml_row()]
    kd = values["kd"]
    kd_text = describe("kd", kd)
    if "kd+crd" in values:
        kd_crd = {"alpha": kd["alpha"], "temperature": kd["temperature"],
                  "methods": [{"name": "kd"}, {"name": "crd", "weight": values["kd+crd"]["weight"],
                                               "options": dict(CRD)}]}
        rows.append(Row("kd-crd", "kd + crd", _const({"distill": kd_crd}),
                        f"{kd_text}, crd weight={values['kd+crd']['weight']:.3g}", uses=("kd", "crd")))

    def multi(ds, student, seed):
        return {"distill": _scheme(kd, "multi-teacher", combine="arithmetic", teachers=[
            {"model": teacher, "checkpoint": str(ds.teacher_ckpt)},
            {"model": "hinton-teacher", "checkpoint": str(ds.second_teacher())}])}

    def early(ds, student, seed):
        return {"distill": _scheme(kd, "early-stop", teacher_epoch=0 if ds.quick else 3)}

    def noisy(ds, student, seed):
        alone = ds.work / "runs" / student / "shared" / "alone" / f"seed{seed}" / "student" / "best.safetensors"
        spec = STUDENTS[student]
        return {"teacher": {**spec, "checkpoint": str(alone)},
                "distill": _scheme(kd, "noisy-student", rounds=1, input_noise=0.1, dropout=0.3)}

    def transfer_other(ds, student, seed):
        # the training images stay in the transfer set: the other set's images alone never show the
        # student its own classes' inputs (measured: 8% on Fashion-MNIST from MNIST images alone)
        return {"distill": _scheme(kd, "transfer", source="dataset", dataset=other,
                                   limit=2000 if ds.quick else 20000, include_train=True)}

    rows += [
        Row("born-again", "born-again (2 generations)",
            _const({"distill": _scheme(kd, "born-again", generations=2)}), kd_text, uses=("born-again",)),
        Row("multi-teacher", f"multi-teacher (arithmetic: {teacher} + hinton-teacher)", multi, kd_text,
            uses=("multi-teacher",)),
        Row("takd", "takd (assistant mlp-medium)",
            _const({"distill": _scheme(kd, "takd", assistants=[{"model": "mlp-medium"}])}), kd_text,
            uses=("takd",)),
        dml_row(),
        Row("early-stop", f"early-stopped teacher (epoch 4 of {teacher_epochs})", early, kd_text,
            uses=("early-stop",)),
        Row("noisy-student", "noisy student (teacher: this student alone, same size)", noisy,
            f"{kd_text}; input noise 0.1, dropout 0.3", needs_alone=True, uses=("noisy-student",)),
        Row("transfer-munge", "transfer (MUNGE x1, no labels)",
            _const({"distill": _scheme(kd, "transfer", source="munge", multiplier=1)}),
            f"T={kd['temperature']:.3g}, alpha=1 (forced)", uses=("transfer",)),
        Row("transfer-plus-other", f"transfer (training images + 20k unlabeled {other} images)", transfer_other,
            f"T={kd['temperature']:.3g}, alpha=1 (forced)", uses=("transfer",)),
    ]
    return rows


def tuned_rows(values: dict[str, dict[str, float]], other: str, teacher_epochs: int, teacher: str) -> list[Row]:
    values = dict(values)
    if "crd" in values:
        values["kd+crd"] = values["crd"]  # kd + crd reuses the kd and crd values tuned separately
    return rows_for(values, other, teacher_epochs, teacher)


def paper_rows(other: str, teacher_epochs: int, teacher: str) -> list[Row]:
    values = dict(PAPER)
    # RepDistiller's CE + KD + 0.8 CRD is 0.5 CE + 0.5 KD + 0.4 CRD up to a factor AdamW ignores
    values["kd+crd"] = {"weight": 0.4}
    rows = rows_for(values, other, teacher_epochs, teacher)
    for row in rows:
        if row.slug == "kd-crd":
            row.build = _const({"distill": {"alpha": 0.5, "temperature": 4.0, "methods": [
                {"name": "kd"}, {"name": "crd", "weight": 0.4, "options": dict(CRD)}]}})
            row.settings = "T=4, alpha=0.5, crd weight=0.4 (= CE + KD + 0.8 CRD)"
    return rows


def _conv_pairs(name: str, weight: float) -> dict[str, Any]:
    layers = ("features.1", "features.2")  # the 7x7 and 3x3 block outputs of both nets
    return {"alpha": 0.0, "methods": [{"name": name, "weight": weight,
                                       "options": {"student_layer": p, "teacher_layer": p}} for p in layers]}


def cnn_rows(values: dict[str, dict[str, float]]) -> list[Row]:
    """The conv student: alone, kd at the small MLP's tuned values, at and nst at the papers' weights."""
    rows = [alone_row()]
    if "kd" in values:
        rows.append(Row("kd", "kd", _const({"distill": method_section("kd", values["kd"])}),
                        describe("kd", values["kd"]) + " (tuned on mlp-simple [32])", column="tuned",
                        uses=("kd",)))
    return rows + [
        Row("at", "at", _const({"distill": _conv_pairs("at", 1000.0)}),
            "weight=1000 per pair, features.1 and features.2", column="paper", uses=("at",)),
        Row("nst", "nst", _const({"distill": _conv_pairs("nst", 50.0)}),
            "weight=50 per pair, features.1 and features.2", column="paper", uses=("nst",)),
    ]


def row_uses() -> dict[str, set[str]]:
    """Per row name, the registered methods and schemes it runs (every row of every column)."""
    rows = [dml_row(), *paper_rows("other", 1, "teacher"), *cnn_rows({"kd": PAPER["kd"]})]
    return {row.slug: set(row.uses) for row in rows}
