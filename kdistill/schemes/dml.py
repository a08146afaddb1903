"""Deep mutual learning (Zhang et al. 2018, "Deep Mutual Learning", CVPR).

No pre-trained teacher: a cohort of peers trains together, each on the labels
and on the (detached) predictions of the others::

    L_k = CE(z_k, y) + T^2 / (K - 1) * sum_{j != k} KL(softmax(z_j / T) || softmax(z_k / T))

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
from kdistill.errors import ConfigError
from kdistill.experiment import RunResult, build_model, build_run, execute
from kdistill.experiment.validate import member_configs
from kdistill.methods.base import soft_kl
from kdistill.schemes import register_scheme
from kdistill.schemes._common import prepare, write_summary
from kdistill.train.objective import TrainingObjective


class MutualLearning(TrainingObjective):
    """A training objective for :func:`kdistill.train.fit`: K peers teaching each other."""

    def __init__(self, student: nn.Module, peers: Sequence[nn.Module], temperature: float = 1.0) -> None:
        super().__init__()
        if not peers:
            raise ValueError("mutual learning needs at least one peer besides the student")
        self.student = student
        self.peers = nn.ModuleList(peers)
        self.temperature = float(temperature)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"model": self.student, "peers": self.peers}

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        logits = [self.student(inputs), *(p(inputs) for p in self.peers)]
        t, k = self.temperature, len(logits)
        losses: dict[str, Tensor] = {}
        total = logits[0].new_zeros(())
        for i, z in enumerate(logits):
            mimic = sum(soft_kl(z, other.detach(), t) for j, other in enumerate(logits) if j != i) * t * t / (k - 1)
            ce = nn.functional.cross_entropy(z, labels)
            losses[f"peer{i}_ce"], losses[f"peer{i}_kl"] = ce, mimic
            total = total + ce + mimic
        losses["student"] = losses["peer0_ce"]
        losses["loss"] = total
        return losses


@register_scheme("dml")
def run_dml(cfg: ExperimentConfig, *, data: DataSplits | None = None, out_dir: str | Path | None = None,
            peers: list[Any] | None = None, temperature: float = 1.0) -> RunResult:
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

    def mutual(student: nn.Module) -> MutualLearning:
        return MutualLearning(student, [build_model(p, data) for p in peer_cfgs], temperature)

    run = build_run(cfg, "student", data=data, out_dir=out / "student", make_objective=mutual)
    run.metadata["distill"] = cfg.distill.model_dump(mode="json")
    result = execute(run)
    write_summary(out, {"scheme": "dml", "peers": len(peer_cfgs), "student": result.metrics})
    return result
