"""Self-attention map matching (Jiao et al. 2020, TinyBERT; Wang et al. 2020, MiniLM).

For mapped layers ``(t_k, s_k)`` the attention distributions
``A = softmax(Q K^T / sqrt(d_head))`` of the teacher teach the student's::

    kl:   L = mean_{heads, real queries} KL( A_t || A_s )      (MiniLM, Eq. 2)
    mse:  L = mean_{heads, real queries, keys} (A_s - A_t)^2    (TinyBERT, Eq. 7, on probabilities)

``A`` is recomputed from the hooked query and key projections (the outputs of
``<attention>.query`` and ``<attention>.key``), so it works whatever attention
kernel the model runs (eager, SDPA) and needs no ``output_attentions``.
Padding keys are masked as the model masks them and padding queries are left
out. When teacher and student have different numbers of heads, their
head-averaged maps are compared.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.methods.hooks import resolve_module
from kdistill.methods.layer_map import parse_layer_map, token_mask
from kdistill.registry import register_method

ATTENTION_TEMPLATE = "backbone.encoder.layer.{i}.attention.self"
LOSSES = ("kl", "mse")


def attention_probs(q: Tensor, k: Tensor, heads: int, key_mask: Tensor) -> Tensor:
    """(N, H, L, L) attention probabilities from (N, L, H*d) query and key projections."""
    n, length, width = q.shape
    d = width // heads
    q = q.float().view(n, length, heads, d).transpose(1, 2)
    k = k.float().view(n, length, heads, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


@register_method("attention-maps")
class AttentionMapMatching(DistillationMethod):
    # batches are padded only to their longest sentence, so per-sample feature caches would not line up
    needs_live_teacher = True

    def __init__(self, layers: dict[str, Any] | None = None, loss: str = "kl",
                 teacher_path: str = ATTENTION_TEMPLATE, student_path: str = ATTENTION_TEMPLATE,
                 teacher_heads: int | None = None, student_heads: int | None = None) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        teacher, student = parse_layer_map(layers or {"teacher": [1, 3, 5], "student": [0, 1, 2]},
                                           "attention-maps")
        if min(teacher + student) < 0:
            raise ValueError("attention-maps: layer indices must be >= 0")
        self.t_attn = [teacher_path.format(i=i) for i in teacher]
        self.s_attn = [student_path.format(i=i) for i in student]
        self.teacher_layers = tuple(p + suffix for p in self.t_attn for suffix in (".query", ".key"))
        self.student_layers = tuple(p + suffix for p in self.s_attn for suffix in (".query", ".key"))
        self.loss = loss
        self.heads = {"teacher": teacher_heads, "student": student_heads}
        self.pad_id: int | None = None

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor, num_train: int) -> None:
        self.pad_id = getattr(student, "pad_id", None)
        for role, model, paths in (("student", student, self.s_attn), ("teacher", teacher, self.t_attn)):
            if self.heads[role] is None:
                counts = {getattr(resolve_module(model, p, role), "num_attention_heads", None) for p in paths}
                if None in counts or len(counts) != 1:
                    raise ValueError(f"attention-maps: cannot read the {role}'s number of heads from "
                                     f"{paths}; set the option {role}_heads")
                self.heads[role] = counts.pop()

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        terms = []
        for s_path, t_path in zip(self.s_attn, self.t_attn):
            q_s, k_s = ctx.student_features[s_path + ".query"], ctx.student_features[s_path + ".key"]
            q_t, k_t = ctx.teacher_features[t_path + ".query"], ctx.teacher_features[t_path + ".key"]
            length = min(q_s.shape[1], q_t.shape[1])
            mask = token_mask(ctx.inputs, length, self.pad_id)
            a_s = attention_probs(q_s[:, :length], k_s[:, :length], self.heads["student"], mask)
            a_t = attention_probs(q_t[:, :length], k_t[:, :length], self.heads["teacher"], mask)
            if a_s.shape[1] != a_t.shape[1]:
                a_s, a_t = a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True)
            rows = mask[:, None, :, None].to(a_s.dtype)  # real queries only
            if self.loss == "kl":
                kl = a_t * (torch.log(a_t.clamp(min=1e-12)) - torch.log(a_s.clamp(min=1e-12)))
                per_row = kl.sum(-1, keepdim=True)
            else:
                per_row = (a_s - a_t).pow(2).mean(-1, keepdim=True)
            count = rows.sum() * a_s.shape[1]
            terms.append((per_row * rows).sum() / count.clamp(min=1.0))
        return {"attention": torch.stack(terms).mean()}
