"""Hidden-state matching between transformer layers (Sanh et al. 2019; Jiao et al. 2020).

DistilBERT (Sanh et al. 2019, Sec. 3) adds a cosine loss aligning the
directions of student and teacher hidden states; TinyBERT (Jiao et al. 2020,
Eq. 8) matches them with a mean squared error through a learned projection
``W_h`` when the widths differ. For each mapped pair ``(t_k, s_k)``::

    mse:     L = mean_tokens || W_h h_s^(s_k) - h_t^(t_k) ||^2 / d_t
    cosine:  L = mean_tokens ( 1 - cos(W_h h_s^(s_k), h_t^(t_k)) )

averaged over the pairs; padding tokens are left out. ``W_h`` is an identity
when the widths agree (unless ``project: always``) and is trained with the
student but never exported with it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.methods.layer_map import (
    EMBEDDINGS_PATH,
    LAYER_TEMPLATE,
    layer_path,
    parse_layer_map,
    probe_outputs,
    token_mask,
)
from kdistill.registry import register_method

LOSSES = ("mse", "cosine")


@register_method("hidden-states")
class HiddenStateMatching(DistillationMethod):
    # batches are padded only to their longest sentence, so per-sample feature caches would not line up
    needs_live_teacher = True

    def __init__(self, layers: dict[str, Any] | None = None, loss: str = "mse",
                 teacher_path: str = LAYER_TEMPLATE, student_path: str = LAYER_TEMPLATE,
                 embeddings_path: str = EMBEDDINGS_PATH, project: str = "auto") -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if project not in ("auto", "always"):
            raise ValueError(f"project must be 'auto' or 'always', got {project!r}")
        teacher, student = parse_layer_map(layers or {"teacher": [1, 3, 5], "student": [0, 1, 2]},
                                           "hidden-states")
        self.teacher_layers = tuple(layer_path(teacher_path, i, embeddings_path) for i in teacher)
        self.student_layers = tuple(layer_path(student_path, i, embeddings_path) for i in student)
        self.loss = loss
        self.project = project
        self.projections = nn.ModuleList()
        self.pad_id: int | None = None

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor, num_train: int) -> None:
        self.pad_id = getattr(student, "pad_id", None)
        s_out = probe_outputs(student, list(self.student_layers), sample)
        t_out = probe_outputs(teacher, list(self.teacher_layers), sample)
        self.projections = nn.ModuleList()
        for s_path, t_path in zip(self.student_layers, self.teacher_layers):
            d_s, d_t = s_out[s_path].shape[-1], t_out[t_path].shape[-1]
            if d_s == d_t and self.project == "auto":
                self.projections.append(nn.Identity())
            else:
                self.projections.append(nn.Linear(d_s, d_t))
        self.projections.to(sample.device)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        terms = []
        for proj, s_path, t_path in zip(self.projections, self.student_layers, self.teacher_layers):
            h_s = proj(ctx.student_features[s_path].float())
            h_t = ctx.teacher_features[t_path].float()
            length = min(h_s.shape[1], h_t.shape[1])
            h_s, h_t = h_s[:, :length], h_t[:, :length]
            mask = token_mask(ctx.inputs, length, self.pad_id).to(h_s.dtype)
            if self.loss == "mse":
                per_token = (h_s - h_t).pow(2).mean(-1)
            else:
                per_token = 1.0 - F.cosine_similarity(h_s, h_t, dim=-1)
            terms.append((per_token * mask).sum() / mask.sum().clamp(min=1.0))
        return {"hidden": torch.stack(terms).mean()}
