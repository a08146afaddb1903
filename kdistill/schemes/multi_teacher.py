"""Multi-teacher distillation: one student learns from an ensemble of teachers.

Hinton et al. 2015 distil an ensemble into one model; You et al. 2017
("Learning from Multiple Teacher Networks", KDD) weight the teachers. With
teacher logits z_m, weights w_m (normalised to sum 1) and temperature T,
:class:`TeacherEnsemble` produces logits whose softmax at T is::

    arithmetic:  p = sum_m w_m softmax(z_m / T)              (mixture of the distributions)
    geometric:   p ∝ exp(sum_m w_m log_softmax(z_m / T))     (normalised weighted geometric mean)

It returns ``T * log p`` so that the Distiller's ``softmax(. / T)`` recovers
exactly ``p``: the ensemble plugs in wherever a teacher goes.

Feature methods (fitnets, pkt, rkd, sp, crd, at, nst) take their teacher
features from one member, since the members' feature maps need not have the
same shape: by default member 0's default feature layer
(``teachers.0.<layer>``, see :func:`kdistill.methods.default_feature_layer`),
and ``teacher_layer: teachers.K.<path>`` picks any layer of member ``K``.
The layer chosen is listed by :meth:`kdistill.distiller.Distiller.feature_layer_summary`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdistill.config import ExperimentConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError
from kdistill.experiment import RunResult, get_teacher, run_distill, seeded
from kdistill.experiment.validate import (
    check_pair,
    member_configs,
    meta_model,
    teacher_for_validation,
)
from kdistill.methods.features import default_feature_layer
from kdistill.schemes._common import as_model_config, prepare, write_summary
from kdistill.schemes.registry import register_scheme

log = logging.getLogger("kdistill")


class TeacherEnsemble(nn.Module):
    """Several teachers behind one ``forward`` that returns combined logits."""

    def __init__(self, teachers: Sequence[nn.Module], combine: str = "arithmetic",
                 weights: Sequence[float] | None = None, temperature: float = 1.0) -> None:
        super().__init__()
        if combine not in {"arithmetic", "geometric"}:
            raise ConfigError(f"multi-teacher: combine must be 'arithmetic' or 'geometric', got {combine!r}.")
        if not teachers:
            raise ConfigError("multi-teacher: give at least one teacher.")
        weights = list(weights) if weights is not None else [1.0] * len(teachers)
        if len(weights) != len(teachers) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"multi-teacher: need one non-negative weight per teacher ({len(teachers)}), "
                              f"not all zero; got {weights}.")
        self.teachers = nn.ModuleList(teachers)
        self.combine = combine
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))
        self.temperature = float(temperature)

    @property
    def default_feature_layer(self) -> str:
        """Member 0's default feature layer, as a path in the ensemble (``teachers.0.layer3``).

        Feature methods compare the student with one teacher's features; the
        members may differ in shape, so no mixture of them is formed. Name
        another member's layer with ``teacher_layer: teachers.K.<path>``.
        """
        return f"teachers.0.{default_feature_layer(self.teachers[0])}"

    def forward(self, x: Tensor) -> Tensor:
        t = self.temperature
        log_p = torch.stack([m(x).float() / t for m in self.teachers]).log_softmax(-1)  # (M, B, C)
        w = self.weights.view(-1, 1, 1)
        if self.combine == "arithmetic":
            combined = torch.logsumexp(log_p + w.log(), dim=0)
        else:
            combined = (w * log_p).sum(0).log_softmax(-1)
        return t * combined


def check_multi_teacher(cfg: ExperimentConfig, data: DataSplits, options: dict[str, Any]) -> None:
    """Before any training: a classification set, buildable members, the student bound to the ensemble."""
    if data.task == "regression":
        raise ConfigError("Scheme 'multi-teacher' mixes class distributions and cannot train a regressor "
                          "(the data set has a numeric target); use plain distillation or born-again.")
    if cfg.teacher is None:
        raise ConfigError("Distillation needs a 'teacher' section (model, and optionally checkpoint).")
    members = member_configs(options.get("teachers"), "multi-teacher: teachers")
    if not members and cfg.teacher.checkpoint:
        raise ConfigError("multi-teacher builds its ensemble from options.teachers; with one teacher "
                          "checkpoint (--teacher) it would average two copies of the same model. List "
                          "the members: distill.scheme.options.teachers: [{checkpoint: A}, {model: B}].")
    teachers = [teacher_for_validation(m, data) for m in members or [cfg.teacher]]
    ensemble = TeacherEnsemble(teachers, temperature=cfg.distill.temperature) \
        if all(t is not None for t in teachers) else None
    check_pair(cfg, ensemble, meta_model(cfg.student, data, "student", ensemble), data)


@register_scheme("multi-teacher", check=check_multi_teacher)
def run_multi_teacher(cfg: ExperimentConfig, *, data: DataSplits | None = None,
                      out_dir: str | Path | None = None, teachers: list[Any] | None = None,
                      combine: Literal["arithmetic", "geometric"] = "arithmetic",
                      weights: list[float] | None = None) -> RunResult:
    """Distil the student from several teachers (``teachers``: model names or {model, checkpoint, options}).

    Teachers without a checkpoint are trained first, teacher m with seed
    ``train.seed + m``, so that identical architectures still differ.
    """
    given = cfg.teacher.checkpoint if cfg.teacher is not None else None
    listed = {Path(spec["checkpoint"]).expanduser().resolve() for spec in teachers or []
              if isinstance(spec, dict) and isinstance(spec.get("checkpoint"), str)}
    if given and teachers and Path(given).expanduser().resolve() not in listed:
        raise ConfigError(
            f"multi-teacher: options.teachers lists the ensemble, so the teacher checkpoint '{given}' "
            "(teacher.checkpoint, or --teacher) would not be used. Add it to the list as {model: NAME, "
            "checkpoint: PATH}, or leave teacher.checkpoint and --teacher out.")
    if given and not teachers:
        raise ConfigError(
            f"multi-teacher: without options.teachers the ensemble is the config's teacher trained twice "
            f"(seeds train.seed and train.seed + 1), but teacher.checkpoint '{given}' (or --teacher) would make "
            "both members the same model. List the members in options.teachers, e.g. [{model: NAME, "
            "checkpoint: PATH}, {model: NAME2}].")
    data, out = prepare(cfg, data, out_dir)
    specs = teachers or ([cfg.teacher.model_dump()] * 2 if cfg.teacher else [])
    if len(specs) < 1:
        raise ConfigError("multi-teacher: list the teachers in options.teachers (model names or mappings).")
    models = []
    for m, spec in enumerate(specs):
        member = seeded(cfg, cfg.train.seed + m)
        member.teacher = as_model_config(spec)
        models.append(get_teacher(member, data, out / f"teacher-{m}"))
    ensemble = TeacherEnsemble(models, combine, weights, cfg.distill.temperature)
    result = run_distill(cfg, data=data, teacher=ensemble, out_dir=out)
    write_summary(out, {"scheme": "multi-teacher", "combine": combine, "teachers": len(models),
                        "student": result.metrics})
    return result
