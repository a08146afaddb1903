"""Transfer sets (Bucila, Caruana & Niculescu-Mizil 2006, "Model Compression", KDD).

The student learns only from the teacher's outputs on a *transfer set* of
inputs without labels, which may be much larger than the labelled set:

* ``source: munge`` — synthetic pseudo-data from the training inputs. MUNGE:
  for each sample e, find its nearest neighbour e' (Euclidean); for each
  attribute a, with probability ``p`` swap e_a and e'_a and perturb
  continuous values with Gaussian noise of std |e_a - e'_a| / ``s``
  (``s`` = the paper's local variance parameter). Repeated ``multiplier`` times.
  Meant for tabular data; on images it perturbs pixels independently.
* ``source: dataset`` — another, unlabelled data set with the same input
  shape (e.g. Fashion-MNIST images as transfer data for an MNIST student).

Hard labels do not exist on transfer data, so ``distill.alpha`` is forced to 1
(only the soft-target term trains; with ``distill.terms`` the ``ce`` term is
left out) and validation scores agreement with the
teacher's top-1 on a held-out part of the transfer set. Test metrics are on
the original labelled test split.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from kdistill.config import DistillConfig, ExperimentConfig, MethodConfig
from kdistill.data import DataSplits, load_dataset
from kdistill.distiller import resolve_terms
from kdistill.errors import ConfigError, DataError
from kdistill.eval import predict
from kdistill.experiment import RunResult, get_teacher, run_distill
from kdistill.schemes._common import prepare, write_summary
from kdistill.schemes.registry import register_scheme

log = logging.getLogger("kdistill")


def munge(x: Tensor, multiplier: int = 2, p: float = 0.5, s: float = 1.0, seed: int = 0,
          block: int = 2048) -> Tensor:
    """``multiplier`` x len(x) MUNGE pseudo-samples (continuous attributes), shaped like ``x``."""
    if multiplier < 1 or not 0 <= p <= 1 or s <= 0:
        raise ConfigError("munge: multiplier >= 1, p in [0, 1] and s > 0 are required.")
    if len(x) < 2:
        raise DataError("munge needs at least 2 samples to find nearest neighbours.")
    flat = x.reshape(len(x), -1).float()
    neighbour = torch.empty(len(flat), dtype=torch.long)
    for i in range(0, len(flat), block):  # blocks keep the distance matrix small for 60k samples
        d = torch.cdist(flat[i:i + block], flat)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = float("inf")
        neighbour[i:i + block] = d.argmin(1)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(multiplier):
        e, other = flat.clone(), flat[neighbour]
        swap = torch.rand(e.shape, generator=gen) < p
        std = (e - other).abs() / s
        # each selected attribute takes the neighbour's value, jittered by the local spread
        e = torch.where(swap, other + std * torch.randn(e.shape, generator=gen), e)
        out.append(e)
    return torch.cat(out).reshape(-1, *x.shape[1:])


def teacher_labelled(data: DataSplits, inputs: Tensor, teacher: torch.nn.Module, name: str) -> DataSplits:
    """``data`` with its training split replaced by ``inputs`` labelled by the teacher's top-1."""
    outputs = predict(teacher, inputs)
    labels = outputs.squeeze(-1) if data.num_classes == 0 else outputs.argmax(-1)
    return dataclasses.replace(data, name=name, x_train=inputs, y_train=labels.to(data.y_train.dtype))


def without_labels(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the label term taken out of the loss: the transfer set's labels are the teacher's guesses.

    With ``distill.alpha`` that is ``alpha`` forced to 1 (the kd term alone);
    with ``distill.terms``, or a method that replaces kd while alpha is
    unset, the ``ce`` term is dropped from the resolved terms.
    """
    d = cfg.distill
    run_cfg = cfg.model_copy(deep=True)
    terms = resolve_terms(d, label_smoothing=cfg.train.label_smoothing)
    if not d.terms and ("alpha" in d.model_fields_set or any(t.name == "kd" for t in terms)):
        if d.alpha != 1.0:
            log.warning("transfer set has no labels: distill.alpha forced from %s to 1 (soft targets only)",
                        d.alpha)
            run_cfg.distill.alpha = 1.0
        return run_cfg
    kept = [MethodConfig(name=t.name, weight=t.weight, options=t.options) for t in terms if t.name != "ce"]
    if not kept:
        raise ConfigError("transfer: the transfer set has no labels, and the loss has no term besides ce; "
                          "add kd (or another term that learns from the teacher) to distill.terms.")
    if len(kept) < len(terms):
        log.warning("transfer set has no labels: the ce term is left out of the loss")
    run_cfg.distill = DistillConfig(temperature=d.temperature, terms=kept, scheme=d.scheme, cache=d.cache,
                                    teacher_precision=d.teacher_precision)
    return run_cfg


@register_scheme("transfer")
def run_transfer(cfg: ExperimentConfig, *, data: DataSplits | None = None, out_dir: str | Path | None = None,
                 source: Literal["munge", "dataset"] = "munge", dataset: str | None = None,
                 limit: int | None = None, multiplier: int = 2, p: float = 0.5, s: float = 1.0,
                 include_train: bool = False) -> RunResult:
    """Distil on a teacher-labelled transfer set (MUNGE pseudo-data or another data set's inputs)."""
    data, out = prepare(cfg, data, out_dir)
    teacher = get_teacher(cfg, data, out)
    if source == "munge":
        inputs = munge(data.x_train, multiplier, p, s, seed=cfg.train.seed)
    else:
        if not dataset:
            raise ConfigError("transfer: source 'dataset' needs options.dataset, e.g. fashion-mnist.")
        other = load_dataset(dataset, data_dir=cfg.data.data_dir, download=cfg.data.download)
        if tuple(other.input_shape) != tuple(data.input_shape):
            raise DataError(f"transfer: '{dataset}' inputs have shape {other.input_shape} but the student "
                            f"takes {data.input_shape}; a transfer set must have the same input shape.")
        inputs = other.x_train
        if not include_train:
            # measured in docs/METHODS_BENCHMARK.md: MNIST images alone teach a Fashion-MNIST student 8%
            log.warning("transfer: the transfer set holds only '%s' inputs and none of '%s'; a student that "
                        "never sees inputs of its own classes learns little from them (the methods "
                        "benchmark measured 8-20%% accuracy this way). Set the scheme's option "
                        "include_train: true to add the training inputs.", dataset, data.name)
    if limit:
        inputs = inputs[torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))[:limit]]
    if include_train:
        inputs = torch.cat([data.x_train, inputs])
    transfer = teacher_labelled(data, inputs, teacher, f"{data.name}+transfer")
    run_cfg = without_labels(cfg)
    log.info("transfer set: %d inputs (%s)", len(inputs), source)
    result = run_distill(run_cfg, data=transfer, teacher=teacher, out_dir=out)
    write_summary(out, {"scheme": "transfer", "source": source, "dataset": dataset, "size": len(inputs),
                        "student": result.metrics})
    return result
