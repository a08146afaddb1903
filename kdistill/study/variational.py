"""The study's ``variational`` family: distilled students that prune themselves (Hegde et al. 2019).

For each selected (teacher, student) pair (``variational.teachers`` /
``variational.students``, by default the distillation's), a sparse variational
dropout student is distilled from the trained baseline teacher through
:func:`kdistill.experiment.run_distill` (the KL term is added by the run),
then sparsified at each of ``variational.thresholds``; every sparsified model
is saved in the bitmask format (``models/variational-T-TEACHER-to-STUDENT.safetensors``)
and measured like the others, with technique ``variational`` and setting
``log alpha < T``. Its accuracy against non-zero parameters is drawn beside
unstructured magnitude pruning by :func:`kdistill.study.plots.accuracy_vs_nonzero`.

A resumed study skips the thresholds already measured and reuses a finished
training run (``runs/variational-TEACHER-to-STUDENT/student/last.safetensors``);
an interrupted one continues from that checkpoint.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from kdistill.compress.prune import save_sparse
from kdistill.compress.variational import load_variational, sparsify
from kdistill.config import ExperimentConfig, ModelConfig, VariationalConfig
from kdistill.eval import format_bytes
from kdistill.experiment import model_spec, run_distill
from kdistill.study.config import select
from kdistill.train.checkpoint import read_checkpoint_metadata

if TYPE_CHECKING:
    from kdistill.study.runner import Study

TECHNIQUE = "variational"


def variational_pairs(study: Study) -> list[tuple[str, str]]:
    """(teacher, student) pairs of the family: each selected student under each larger teacher."""
    v = study.cfg.variational
    if v is None:
        return []
    sizes = study.sizes
    teachers = select(v.teachers if v.teachers is not None else study.cfg.distill.teachers, sizes)
    students = select(v.students if v.students is not None else study.cfg.distill.students, sizes)
    return [(t, s) for t in sorted(teachers, key=sizes.get, reverse=True)
            for s in sorted(students, key=sizes.get) if sizes[s] < sizes[t]]


def run_name(threshold: float, teacher: str, student: str) -> str:
    return f"{TECHNIQUE}-{threshold:g}/{teacher}->{student}"


def variational_student(study: Study, teacher: str, student: str) -> None:
    """Train (or reuse) one variational student and record a row per threshold."""
    cfg, v = study.cfg, study.cfg.variational
    todo = [t for t in v.thresholds if not study.log.done(run_name(t, teacher, student))]
    if not todo:
        return
    d = cfg.distill
    train = v.train or d.train or cfg.train
    student_cfg = ModelConfig(model=student, variational=VariationalConfig(
        threshold=v.thresholds[0], kl_weight=v.kl_weight, anneal_epochs=v.anneal_epochs))
    exp = ExperimentConfig(
        name=f"{TECHNIQUE}/{teacher}->{student}", data=cfg.data, teacher=ModelConfig(model=teacher),
        student=student_cfg, distill=d.run_settings(), train=train)
    tag = f"{teacher}-to-{student}"
    run_dir = study.out / "runs" / f"{TECHNIQUE}-{tag}"
    last = run_dir / "student" / "last.safetensors"
    seconds: float | None = None
    finished = last.exists() and read_checkpoint_metadata(last).get("epoch") == train.epochs - 1
    if not finished:
        result = run_distill(exp, data=study.data, teacher=study.baselines[teacher], out_dir=run_dir,
                             resume=last if last.exists() else None)
        seconds = result.seconds
    model, _ = load_variational(last)
    spec = model_spec(student_cfg, study.data)
    for threshold in todo:
        sparse = sparsify(model, threshold)
        artifact = save_sparse(sparse, study.models_dir / f"{TECHNIQUE}-{threshold:g}-{tag}.safetensors",
                               {"model_spec": spec, "technique": TECHNIQUE, "teacher": teacher})
        study.record(run_name(threshold, teacher, student), sparse, artifact, params=study.sizes[student],
                     reference=teacher, technique=TECHNIQUE, model=student, source=teacher,
                     setting=f"log alpha < {threshold:g}", train_seconds=seconds)


def run_family(study: Study) -> None:
    """Every pair of the family (nothing when the study has no ``variational`` section)."""
    for teacher, student in variational_pairs(study):
        variational_student(study, teacher, student)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Report sentences: sparsity and accuracy of each variational student against its dense peers."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("accuracy") is not None]
    var = [r for r in ok if r["technique"] == TECHNIQUE]
    if not var:
        return []
    dense = {(r["source"], r["model"]): r for r in ok if r["technique"] == "distilled"}
    pruned = [r for r in ok if r["technique"] == "prune-unstructured"]
    out = []
    for r in sorted(var, key=lambda r: r["run"]):
        kept = r["nonzero_params"] / r["params"]
        text = (f"Variational student <b>{r['model']}</b> from {r['source']} ({r['setting']}): "
                f"{100 * r['accuracy']:.2f}% with {r['nonzero_params']:,} of {r['params']:,} parameters "
                f"non-zero ({100 * kept:.1f}%), {format_bytes(r['size_bytes'])} on disk")
        peer = dense.get((r["source"], r["model"]))
        if peer:
            text += (f"; the dense distilled student: {100 * peer['accuracy']:.2f}% at "
                     f"{format_bytes(peer['size_bytes'])}")
        # magnitude pruning that keeps at least as many weights, for a like-for-like comparison
        rivals = [p for p in pruned if p["nonzero_params"] >= r["nonzero_params"]]
        if rivals:
            best = max(rivals, key=lambda p: p["accuracy"])
            text += (f"; the best pruned model with as many or more non-zero parameters: {best['run']} "
                     f"{100 * best['accuracy']:.2f}% ({best['nonzero_params']:,} non-zero)")
        out.append(text + ".")
    if len(var) > 1:
        median = statistics.median(r["nonzero_params"] / r["params"] for r in var)
        out.append(f"Variational students keep a median {100 * median:.1f}% of their parameters non-zero.")
    return out
