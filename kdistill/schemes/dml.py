"""Deep mutual learning (Zhang et al. 2018, "Deep Mutual Learning", CVPR).

No pre-trained teacher: a cohort of peers trains together, each on the labels
and on the (detached) predictions of the others::

    L_k = w_ce * CE(z_k, y) + w_kd * T^2 / (K - 1) * sum_{j != k} KL(softmax(z_j / T) || softmax(z_k / T))

The paper's loss, ``w_ce = w_kd = 1`` at ``T = 1``, is the default. The run's
settings are honoured: ``distill.alpha`` gives ``w_ce = 1 - alpha, w_kd =
alpha``; ``distill.terms`` may list ``ce`` and ``kd`` with their weights;
``distill.temperature`` (or the scheme's ``temperature`` option, or kd's
``temperature`` in terms) sets ``T``; ``train.label_smoothing`` smooths the
labels of the CE term. Methods other than ce and kd compare a student with a
teacher's features and are refused here.

All peers step together (the paper alternates; simultaneous updates on the
same batch are the common simplification). The first peer is the config's
``student`` and the one saved under ``model.``; the others (``peers``) are
saved under ``peers.`` and dropped on export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from kdistill.config import ExperimentConfig
from kdistill.data import DataSplits
from kdistill.distiller import term_options
from kdistill.errors import ConfigError
from kdistill.experiment import RunResult, build_model, build_run, execute
from kdistill.experiment.assembly import loss_log
from kdistill.experiment.validate import member_configs, meta_model
from kdistill.methods.base import soft_kl
from kdistill.schemes._common import prepare, write_summary
from kdistill.schemes.registry import register_scheme
from kdistill.train.objective import TrainingObjective


class MutualLearning(TrainingObjective):
    """A training objective for :func:`kdistill.train.fit`: K peers teaching each other."""

    def __init__(self, student: nn.Module, peers: Sequence[nn.Module], temperature: float = 1.0, *,
                 ce_weight: float = 1.0, kd_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not peers:
            raise ValueError("mutual learning needs at least one peer besides the student")
        self.student = student
        self.peers = nn.ModuleList(peers)
        self.temperature = float(temperature)
        self.ce_weight, self.kd_weight = float(ce_weight), float(kd_weight)
        self.label_smoothing = float(label_smoothing)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"model": self.student, "peers": self.peers}

    def describe_loss(self) -> str:
        return (f"per peer: {self.ce_weight:g} * ce" + (f"(label_smoothing={self.label_smoothing:g})"
                                                         if self.label_smoothing else "")
                + f" + {self.kd_weight:g} * kd(temperature={self.temperature:g}) to the other peers")

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        logits = [self.student(inputs), *(p(inputs) for p in self.peers)]
        t, k = self.temperature, len(logits)
        losses: dict[str, Tensor] = {}
        total = logits[0].new_zeros(())
        for i, z in enumerate(logits):
            mimic = sum(soft_kl(z, other.detach(), t) for j, other in enumerate(logits) if j != i) * t * t / (k - 1)
            ce = nn.functional.cross_entropy(z, labels, label_smoothing=self.label_smoothing)
            losses[f"peer{i}_ce"], losses[f"peer{i}_kl"] = ce, mimic
            total = total + self.ce_weight * ce + self.kd_weight * mimic
        losses["student"] = losses["peer0_ce"]
        losses["loss"] = total
        return losses


def mutual_loss(cfg: ExperimentConfig, temperature: float | None) -> dict[str, float]:
    """DML's ce weight, kd weight, temperature and label smoothing from the config (see the module docstring).

    ``temperature`` is the scheme's own option (``None`` when not given). Any
    setting DML cannot honour is a ConfigError.
    """
    d = cfg.distill
    extra = [m.name for m in d.method_list()]
    if extra:
        raise ConfigError(f"dml trains peers on ce and kd between them; {', '.join(repr(n) for n in extra)} in "
                          "distill.method(s) compares a student with a teacher's features and has no place "
                          "here. Remove it, or use plain distillation.")
    smoothing = cfg.train.label_smoothing
    temperatures: dict[str, float] = {}
    if temperature is not None:
        temperatures["the scheme option temperature"] = float(temperature)
    if "temperature" in d.model_fields_set:
        temperatures["distill.temperature"] = d.temperature
    if d.terms:
        names = [m.name for m in d.terms]
        if set(names) - {"ce", "kd"} or len(set(names)) < len(names):
            raise ConfigError(f"dml's loss is ce and kd between the peers, each at most once; distill.terms lists "
                              f"{', '.join(names)}. Keep ce and kd only.")
        weights = {m.name: m.weight for m in d.terms}
        for m in d.terms:
            options = term_options(m.name, m.options, d.temperature, smoothing)
            if m.name == "kd" and "temperature" in m.options:
                temperatures["kd's temperature in distill.terms"] = options["temperature"]
            if m.name == "ce":
                smoothing = options["label_smoothing"]
        ce_weight, kd_weight = weights.get("ce", 0.0), weights.get("kd", 0.0)
    elif "alpha" in d.model_fields_set:
        ce_weight, kd_weight = 1.0 - d.alpha, d.alpha
    else:
        ce_weight, kd_weight = 1.0, 1.0  # the paper's loss
    if len(set(temperatures.values())) > 1:
        given = "; ".join(f"{where} = {value:g}" for where, value in temperatures.items())
        raise ConfigError(f"dml: the temperature is given more than once with different values ({given}); "
                          "give it once (distill.temperature).")
    t = next(iter(temperatures.values()), 1.0)  # the paper's T = 1 when none is given
    if t <= 0:
        raise ConfigError(f"dml: the temperature must be positive, got {t:g}.")
    return {"ce_weight": ce_weight, "kd_weight": kd_weight, "temperature": t, "label_smoothing": smoothing}


def check_dml(cfg: ExperimentConfig, data: DataSplits, options: dict[str, Any]) -> None:
    """Before any training: a classification set, no teacher checkpoint, buildable peers, an honoured loss."""
    if data.task != "classification":
        raise ConfigError("Scheme 'dml' mixes class distributions and cannot train a regressor "
                          "(the data set has a numeric target); use plain distillation or born-again.")
    if cfg.teacher is not None and cfg.teacher.checkpoint:
        raise ConfigError("dml trains peers that teach each other, without a teacher: remove --teacher "
                          "(teacher.checkpoint) or choose another scheme.")
    mutual_loss(cfg, options.get("temperature"))
    meta_model(cfg.student, data, "student")
    for peer in member_configs(options.get("peers"), "dml: peers"):
        meta_model(peer, data, "dml peer")


@register_scheme("dml", check=check_dml)
def run_dml(cfg: ExperimentConfig, *, data: DataSplits | None = None, out_dir: str | Path | None = None,
            peers: list[Any] | None = None, temperature: float | None = None) -> RunResult:
    """Train the student with mutual-learning peers (default: one copy of the student's architecture).

    The peers are built right after the student, from the same seeded random
    stream, so the same seed always gives the same cohort.
    """
    if cfg.student is None:
        raise ConfigError("dml needs a 'student' section.")
    data, out = prepare(cfg, data, out_dir)
    if data.task != "classification":
        raise ConfigError("dml: mutual learning matches class distributions; the data set is not a "
                          "classification task.")
    peer_cfgs = member_configs(peers, "dml: peers") or [cfg.student]
    loss = mutual_loss(cfg, temperature)

    def mutual(student: nn.Module) -> MutualLearning:
        return MutualLearning(student, [build_model(p, data) for p in peer_cfgs], loss["temperature"],
                              ce_weight=loss["ce_weight"], kd_weight=loss["kd_weight"],
                              label_smoothing=loss["label_smoothing"])

    run = build_run(cfg, "student", data=data, out_dir=out / "student", make_objective=mutual)
    run.metadata["distill"] = cfg.distill.model_dump(mode="json")
    run.metadata["loss_terms"] = [
        {"name": "ce", "weight": loss["ce_weight"], "options": {"label_smoothing": loss["label_smoothing"]}},
        {"name": "kd", "weight": loss["kd_weight"], "options": {"temperature": loss["temperature"]}}]
    loss_log.info("loss: %s", run.objective.describe_loss())
    result = execute(run)
    write_summary(out, {"scheme": "dml", "peers": len(peer_cfgs), "student": result.metrics})
    return result
