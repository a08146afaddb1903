"""Tian, Krishnan & Isola 2020, "Contrastive Representation Distillation" (ICLR).

Student and teacher penultimate features are embedded by linear heads g_s,
g_t into a shared space (``feat_dim`` = 128, L2-normalised). For each sample
i the pair (student i, teacher i) is positive and K pairs with other samples
are negatives, drawn from memory banks that hold one embedding per training
sample (momentum-updated, so negatives cost no extra forward passes). The
critic h(s, t) = exp(s.t / tau) / Z is trained with noise-contrastive
estimation, with noise distribution P_n = 1/N::

    P(pos | s, t) = h / (h + K / N)
    L_NCE = - E_pos[log P(pos | s, t)] - K * E_neg[log(1 - P(pos | s, t_neg))]
    L_CRD = L_NCE(student anchor vs teacher bank) + L_NCE(teacher anchor vs student bank)

Z is estimated once, from the first batch, as N * mean(exp(s.t / tau)) (as in
the authors' code). Memory: two banks of num_train x feat_dim float32, i.e.
60,000 x 128 x 4 bytes x 2 = 61 MB for a 60k-sample set. The banks are buffers
of this method, saved with it under ``methods.`` and never exported.

Under ``torch.distributed`` (world size > 1) the banks are kept identical on
every rank: rank 0's initial banks are broadcast, and each step's updated rows
(indices and momentum-mixed embeddings, padded to the largest rank's batch) are
all-gathered so every rank applies the whole global batch's update.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kdistill.errors import TrainingError
from kdistill.methods.base import StepContext
from kdistill.methods.features import FeaturePairMethod, embedding
from kdistill.registry import register_method


def nce_loss(positive: Tensor, negatives: Tensor, num_data: int) -> Tensor:
    """NCE loss from critic scores h (positive: (B,), negatives: (B, K)), with P_n = 1/N."""
    k = negatives.shape[1]
    noise = k / num_data
    eps = 1e-7
    log_pos = torch.log(positive / (positive + noise + eps))
    log_neg = torch.log(noise / (negatives + noise + eps))
    return -(log_pos + log_neg.sum(1)).mean()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo is given CPU ones (banks are built on CPU in setup)
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_bank(bank: Tensor) -> Tensor:
    """Rank 0's copy of ``bank`` on every rank (unchanged without a process group)."""
    if not _distributed():
        return bank
    device = _comm_device()
    buf = bank.to(device).contiguous()
    dist.broadcast(buf, src=0)
    return buf.to(bank.device)


def gather_rows(indices: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' ``(indices, rows)`` pairs, concatenated in rank order, each index once.

    Ranks may hold different numbers of rows (an uneven last batch), so each
    pads to the largest count and the true counts travel alongside. An index
    seen by several ranks (the weight-0 stand-in sample of a rank with an empty
    share) keeps the lowest rank's row, so every rank picks the same one.
    """
    if not _distributed():
        return indices, rows
    world = dist.get_world_size()
    device = _comm_device()
    count = torch.tensor([len(indices)], device=device, dtype=torch.long)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    most = max(sizes)
    idx = torch.zeros(most, dtype=torch.long, device=device)
    idx[:len(indices)] = indices.to(device)
    val = torch.zeros(most, *rows.shape[1:], dtype=rows.dtype, device=device)
    val[:len(rows)] = rows.to(device)
    all_idx = [torch.empty_like(idx) for _ in range(world)]
    all_val = [torch.empty_like(val) for _ in range(world)]
    dist.all_gather(all_idx, idx)
    dist.all_gather(all_val, val)
    idx = torch.cat([t[:n] for t, n in zip(all_idx, sizes)])
    val = torch.cat([t[:n] for t, n in zip(all_val, sizes)])
    unique, inverse = torch.unique(idx, return_inverse=True)
    position = torch.arange(len(idx), device=device)
    first = torch.full((len(unique),), len(idx), dtype=torch.long, device=device)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    return idx[first].to(indices.device), val[first].to(rows.device)


@register_method("crd")
class CRD(FeaturePairMethod):
    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None,
                 feat_dim: int = 128, num_negatives: int = 4096, nce_temperature: float = 0.07,
                 momentum: float = 0.5) -> None:
        super().__init__(student_layer, teacher_layer)
        if feat_dim <= 0 or num_negatives <= 0 or nce_temperature <= 0 or not 0 <= momentum < 1:
            raise ValueError("feat_dim, num_negatives and nce_temperature must be positive, momentum in [0, 1)")
        self.feat_dim, self.num_negatives = int(feat_dim), int(num_negatives)
        self.nce_temperature, self.momentum = float(nce_temperature), float(momentum)
        self.embed_student: nn.Module | None = None
        self.embed_teacher: nn.Module | None = None
        self.register_buffer("student_bank", torch.empty(0))
        self.register_buffer("teacher_bank", torch.empty(0))
        self.register_buffer("z_student", torch.zeros(()))
        self.register_buffer("z_teacher", torch.zeros(()))

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor, num_train: int) -> None:
        if num_train < 2:
            raise ValueError("CRD needs at least 2 training samples")
        s, t = self.probe(student, teacher, sample)
        if self.embed_student is None:
            self.embed_student = nn.Linear(embedding(s).shape[1], self.feat_dim)
            self.embed_teacher = nn.Linear(embedding(t).shape[1], self.feat_dim)
        if self.student_bank.shape != (num_train, self.feat_dim):
            # uniform random unit vectors, as in the authors' memory initialisation
            bank = nn.functional.normalize(torch.randn(2, num_train, self.feat_dim), dim=2)
            bank = broadcast_bank(bank)  # ranks may have drawn different random numbers
            self.student_bank, self.teacher_bank = bank[0].clone(), bank[1].clone()
        self.k = min(self.num_negatives, num_train - 1)

    def _critic(self, anchor: Tensor, bank: Tensor, indices: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """exp(<anchor, bank[j]> / tau) for j = the positive, then K random negatives."""
        n = len(bank)
        # draw from the other n - 1 samples: shifting draws at or above i by one skips the positive
        negatives = torch.randint(0, n - 1, (len(indices), self.k), device=indices.device)
        negatives = negatives + (negatives >= indices.unsqueeze(1)).long()
        rows = torch.cat([indices.unsqueeze(1), negatives], 1)
        # index_select on the flat rows: on CPU about 5x faster than bank[rows] with a 2-D index
        candidates = bank.index_select(0, rows.reshape(-1)).view(*rows.shape, bank.shape[1])
        scores = torch.exp(torch.einsum("bd,bkd->bk", anchor, candidates) / self.nce_temperature)
        if z.item() == 0:  # first batch: estimate the partition function once
            z.fill_(scores.detach().mean().item() * n)
        scores = scores / z
        return scores[:, 0], scores[:, 1:]

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.indices is None:
            raise TrainingError("CRD needs the training-set positions of each batch (indices) for its memory bank.")
        s, t = self.features(ctx)
        v_s = nn.functional.normalize(self.embed_student(embedding(s).float()), dim=1)
        v_t = nn.functional.normalize(self.embed_teacher(embedding(t).float()), dim=1)
        idx = ctx.indices
        n = len(self.student_bank)
        pos_s, neg_s = self._critic(v_s, self.teacher_bank.detach(), idx, self.z_student)
        pos_t, neg_t = self._critic(v_t, self.student_bank.detach(), idx, self.z_teacher)
        loss = nce_loss(pos_s, neg_s, n) + nce_loss(pos_t, neg_t, n)
        with torch.no_grad():
            banks = (self.student_bank, self.teacher_bank)
            new = [nn.functional.normalize(self.momentum * bank[idx] + (1 - self.momentum) * v.detach(), dim=1)
                   .to(bank.dtype) for bank, v in zip(banks, (v_s, v_t))]
            if _distributed():  # apply every rank's rows, so all ranks keep identical banks
                idx, both = gather_rows(idx, torch.cat(new, 1))
                new = list(both.split(self.feat_dim, 1))
            for bank, rows in zip(banks, new):
                bank[idx] = rows
        return {"crd": loss}
