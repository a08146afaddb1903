"""The compression study: baselines, quantization, pruning, distillation, and their combination.

``run_study(cfg, out_dir)`` trains every model of ``cfg.models`` on labels
(largest first), then for each baseline writes and measures:

* ``dynamic-int8`` and ``static-int8`` post-training quantization
  (:mod:`kdistill.compress.quantize`, in ONNX Runtime; static is skipped,
  with the reason, when the model does not export to ONNX),
* ``prune-unstructured`` at each of ``prune.sparsities`` and
  ``prune-structured`` at each of ``prune.structured``
  (:mod:`kdistill.compress.prune`), each fine-tuned for
  ``prune.finetune_epochs`` with the pruned weights held at zero,

then distils every selected student from every selected, larger teacher
(``distilled``, the foundation's :class:`~kdistill.distiller.Distiller` through
:func:`kdistill.experiment.run_distill`) and quantizes each distilled student
(``distilled+dynamic-int8``). With a ``variational`` section it also distils
variational students that prune themselves (:mod:`kdistill.study.variational`).

Every model is saved as a deployable file under ``models/`` and measured by
:func:`kdistill.study.measure.measure_model`; its row is appended to
``results.jsonl`` as soon as it is finished, and a resumed study skips the
rows already there. The largest model is the *reference*: baselines report
agreement and KL to it; compressed models to the model they came from;
students to their teacher.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.compress.artifact import save_dense
from kdistill.compress.export import onnx_bytes
from kdistill.compress.load import load_artifact, load_model
from kdistill.compress.prune import magnitude_prune, make_permanent, save_sparse, structured_prune
from kdistill.compress.quantize import dynamic_quantize, save_quantized, static_quantize
from kdistill.config import ExperimentConfig, ModelConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError, ModelError
from kdistill.eval import parameter_count, predict
from kdistill.experiment import build_run, execute, load_data, model_spec, run_distill, train_model
from kdistill.models import create_model
from kdistill.study.config import StudyConfig, family, select
from kdistill.study.measure import ResultsLog, measure_model, torch_threads
from kdistill.study.report import write_report
from kdistill.study.variational import run_family as run_variational_family

log = logging.getLogger("kdistill")


@dataclass
class StudyResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    files: dict[str, Path]
    seconds: float


def distill_pairs(cfg: StudyConfig, sizes: dict[str, int]) -> list[tuple[str, str]]:
    """(teacher, student) pairs: each selected student under each selected, larger teacher."""
    teachers = select(cfg.distill.teachers, sizes)
    students = select(cfg.distill.students, sizes)
    return [(t, s) for t in sorted(teachers, key=sizes.get, reverse=True)
            for s in sorted(students, key=sizes.get) if sizes[s] < sizes[t]]


def planned_runs(cfg: StudyConfig, sizes: dict[str, int]) -> list[str]:
    """Every result row a study of models ``sizes`` (name -> parameters) writes, in the order it writes them."""
    by_size = sorted(sizes, key=sizes.get, reverse=True)
    q, p = cfg.quantize, cfg.prune
    runs = [f"baseline/{name}" for name in by_size]
    for name in by_size:
        runs += [f"{kind}-int8/{name}" for kind, on in (("dynamic", q.dynamic), ("static", q.static)) if on]
        runs += [f"prune-unstructured-{s:g}/{name}" for s in p.sparsities]
        runs += [f"prune-structured-{level:g}/{name}" for level in p.structured]
    for teacher, student in distill_pairs(cfg, sizes):
        runs.append(f"distilled/{teacher}->{student}")
        if q.dynamic:
            runs.append(f"distilled+dynamic-int8/{teacher}->{student}")
    return runs


class Study:
    """State of one study run; :func:`run_study` is the public entry point."""

    def __init__(self, cfg: StudyConfig, out: Path, data: DataSplits, resume: bool) -> None:
        self.cfg, self.out, self.data = cfg, out, data
        self.log = ResultsLog(out, resume=resume)
        self.models_dir = out / "models"
        self.sizes = {name: parameter_count(create_model(name, data.input_shape, data.num_classes))
                      for name in cfg.models}
        self.reference = max(self.sizes, key=self.sizes.get)
        self.baselines: dict[str, nn.Module] = {}
        self.logits: dict[str, Tensor] = {}
        self.planned = planned_runs(cfg, self.sizes)
        self.started = time.perf_counter()

    # -------------------------------------------------------------- progress

    def done(self) -> int:
        """How many of the planned rows are in the results log (this run's and a resumed run's)."""
        return len({r["run"] for r in self.log.rows} & set(self.planned))

    def progress(self) -> str:
        """``[12/46, 34 left, 3.1 min]``: planned rows in the log so far, those still to run, time taken."""
        done, total = self.done(), len(self.planned)
        minutes = (time.perf_counter() - self.started) / 60
        return f"[{done}/{total}, {total - done} left, {minutes:.1f} min]"

    # -------------------------------------------------------------- helpers

    def spec(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        return model_spec(ModelConfig(model=name, options=options or {}), self.data)

    def record(self, run: str, net: nn.Module | None, artifact: Path | None, *, params: int,
               reference: str | None, onnx: bool = True, **fields: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"run": run, "family": family(fields.get("model", "")), "status": "ok", **fields}
        if net is not None and artifact is not None:
            onnx_model = None
            if onnx and self.cfg.measure.onnx:
                try:
                    onnx_model = onnx_bytes(net, self.data.input_shape)
                except ModelError as error:
                    row["note"] = str(error)[:200]
            ref = self.logits.get(reference) if reference else None
            row.update(measure_model(net, self.data, self.cfg.measure, artifact=artifact, params=params,
                                     reference_logits=ref, onnx_model=onnx_model))
            row["reference"] = reference
        self.log.append(row)
        acc = row.get("accuracy")
        # one line per finished run: a long study shows where it is and how much is left
        print(f"{self.progress()} {run:<48} " + (f"accuracy {100 * acc:.2f}%  size {row['size_bytes']:,} B"
                                                  if acc is not None else row["status"] + ": " + str(row.get("note"))),
              flush=True)
        return row

    def finetune(self, model: nn.Module, epochs: int) -> float:
        if epochs <= 0:
            return 0.0
        train = self.cfg.train.model_copy(update={"epochs": epochs, "progress": False})
        # a tenth of the training rate: the pruned net only has to recover, not relearn
        train.optimizer = train.optimizer.model_copy(update={"lr": train.optimizer.lr * 0.1})
        data = self.data
        if self.cfg.prune.finetune_samples:
            data = data.subset(self.cfg.prune.finetune_samples, None, seed=1)
        exp = ExperimentConfig(name="fine-tune", data=self.cfg.data, train=train)
        run = build_run(exp, "student", data=data, model=model, out_dir=None)
        result = execute(run, evaluate=False)
        model.eval()
        return result.seconds

    # -------------------------------------------------------------- stages

    def baseline(self, name: str) -> None:
        run = f"baseline/{name}"
        run_dir = self.out / "runs" / f"baseline-{name}"
        done = self.log.done(run)
        if done and (run_dir / "best.safetensors").exists():

            model, _ = load_model(run_dir / "best.safetensors")
        else:
            exp = ExperimentConfig(name=run, data=self.cfg.data, student=ModelConfig(model=name),
                                   train=self.cfg.train)
            result = train_model(exp, "student", data=self.data, out_dir=run_dir)
            model, seconds, done = result.model, result.seconds, None
        self.baselines[name] = model.eval()
        self.logits[name] = predict(model, self.data.x_test)
        if done is None:
            artifact = save_dense(model, self.models_dir / f"baseline-{name}.safetensors",
                                  {"model_spec": self.spec(name), "technique": "baseline"})
            self.record(run, model, artifact, params=self.sizes[name], reference=self.reference,
                        technique="baseline", model=name, source=name, setting="", train_seconds=seconds)

    def quantize(self, name: str) -> None:
        model, spec = self.baselines[name], self.spec(name)
        q = self.cfg.quantize
        kinds = [k for k, on in (("dynamic", q.dynamic), ("static", q.static)) if on]
        for kind in kinds:
            run = f"{kind}-int8/{name}"
            if self.log.done(run):
                continue
            fields = dict(technique=f"{kind}-int8", model=name, source=name, setting="int8")
            try:
                if kind == "dynamic":
                    qmodel = dynamic_quantize(model, self.data.input_shape)
                else:
                    qmodel = static_quantize(model, self.data.x_train[: q.calibration_samples])
            except ModelError as error:
                self.record(run, None, None, params=self.sizes[name], reference=None,
                            status="skipped", note=str(error), **fields)
                continue
            artifact = save_quantized(qmodel, self.models_dir / f"{kind}-int8-{name}.safetensors", kind,
                                      {"model_spec": spec, "technique": f"{kind}-int8"})
            # int8 models run in ONNX Runtime: only its latency columns are measured
            self.record(run, qmodel, artifact, params=self.sizes[name], reference=name, **fields)

    def prune(self, name: str) -> None:
        model, spec, p = self.baselines[name], self.spec(name), self.cfg.prune
        for sparsity in p.sparsities:
            run = f"prune-unstructured-{sparsity:g}/{name}"
            if self.log.done(run):
                continue
            pruned = magnitude_prune(model, sparsity, permanent=False)
            seconds = self.finetune(pruned, p.finetune_epochs)
            pruned = make_permanent(pruned).eval()
            artifact = save_sparse(pruned, self.models_dir / f"prune-unstructured-{sparsity:g}-{name}.safetensors",
                                   {"model_spec": spec, "technique": "prune-unstructured"})
            self.record(run, pruned, artifact, params=self.sizes[name], reference=name,
                        technique="prune-unstructured", model=name, source=name,
                        setting=f"sparsity {sparsity:g}", train_seconds=seconds)
        for level in p.structured:
            run = f"prune-structured-{level:g}/{name}"
            if self.log.done(run):
                continue
            fields = dict(technique="prune-structured", model=name, source=name, setting=f"channels -{level:g}")
            try:
                small, small_spec = structured_prune(model, level, spec)
            except ModelError as error:
                self.record(run, None, None, params=self.sizes[name], reference=None, status="skipped",
                            note=str(error), **fields)
                continue
            seconds = self.finetune(small, p.finetune_epochs)
            artifact = save_dense(small, self.models_dir / f"prune-structured-{level:g}-{name}.safetensors",
                                  {"model_spec": small_spec, "technique": "prune-structured"})
            self.record(run, small, artifact, params=parameter_count(small), reference=name,
                        train_seconds=seconds, **fields)

    def distill(self, teacher: str, student: str) -> None:
        run = f"distilled/{teacher}->{student}"
        tag = f"{teacher}-to-{student}"
        quant_run = f"distilled+dynamic-int8/{teacher}->{student}"
        if self.log.done(run) and (self.log.done(quant_run) or not self.cfg.quantize.dynamic):
            return
        d = self.cfg.distill
        exp = ExperimentConfig(
            name=run, data=self.cfg.data, teacher=ModelConfig(model=teacher), student=ModelConfig(model=student),
            distill=d.run_settings(),
            train=d.train or self.cfg.train)
        run_dir = self.out / "runs" / f"distilled-{tag}"
        if self.log.done(run) and (run_dir / "student" / "best.safetensors").exists():

            model, _ = load_model(run_dir / "student" / "best.safetensors")
        else:
            result = run_distill(exp, data=self.data, teacher=self.baselines[teacher], out_dir=run_dir)
            model = result.model.eval()
            artifact = save_dense(model, self.models_dir / f"distilled-{tag}.safetensors",
                                  {"model_spec": self.spec(student), "technique": "distilled", "teacher": teacher})
            self.record(run, model, artifact, params=self.sizes[student], reference=teacher,
                        technique="distilled", model=student, source=teacher, setting=f"from {teacher}",
                        train_seconds=result.seconds)
        if self.cfg.quantize.dynamic and not self.log.done(quant_run):
            qmodel = dynamic_quantize(model, self.data.input_shape)
            artifact = save_quantized(qmodel, self.models_dir / f"distilled-dynamic-int8-{tag}.safetensors",
                                      "dynamic", {"model_spec": self.spec(student),
                                                  "technique": "distilled+dynamic-int8", "teacher": teacher})
            self.record(quant_run, qmodel, artifact, params=self.sizes[student], reference=teacher,
                        technique="distilled+dynamic-int8", model=student, source=teacher,
                        setting=f"from {teacher}, int8")


def run_study(cfg: StudyConfig, out_dir: str | Path | None = None, quick: bool = False,
              resume: bool = True) -> StudyResult:
    """Run (or resume) the compression study and write results, plots and ``report.html``.

    ``quick`` applies the config's ``quick`` schedule (see
    :meth:`StudyConfig.quick_version`). With ``resume`` (default) runs already
    in ``OUT/results.jsonl`` are skipped; otherwise the log starts empty.
    """
    started = time.perf_counter()
    if quick:
        cfg = cfg.quick_version()
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir()
    data = load_data(ExperimentConfig(data=cfg.data), whole_for="The compression study")
    if data.num_classes == 0:
        raise ConfigError("The compression study compares classifiers; the data set is a regression task.")
    study = Study(cfg, out, data, resume)
    print(f"study {cfg.name}: {len(study.planned)} result rows planned, {study.done()} already in "
          f"{study.log.path}; models: {', '.join(study.sizes)}", flush=True)
    torch.manual_seed(0)
    for name in sorted(study.sizes, key=study.sizes.get, reverse=True):
        study.baseline(name)
    # training may change the thread count; measurements pin their own
    torch_threads(torch.get_num_threads())
    for name in sorted(study.sizes, key=study.sizes.get, reverse=True):
        study.quantize(name)
        study.prune(name)
    for teacher, student in distill_pairs(cfg, study.sizes):
        study.distill(teacher, student)
    run_variational_family(study)  # the variational students (only with a `variational` section)
    files = write_report(study.log.rows, out, title=f"Compression study: {data.name}"
                         + (" (quick schedule)" if quick else ""), config=cfg, data_summary=data.summary())
    return StudyResult(out, study.log.rows, files, time.perf_counter() - started)


__all__ = ["StudyResult", "distill_pairs", "load_artifact", "planned_runs", "run_study", "select"]
