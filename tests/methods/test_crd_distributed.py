"""CRD memory banks under 2 gloo processes: identical on both ranks, equal to one process on the union."""

import os
import subprocess
import sys

import torch
from torch import nn

from kdistill.distiller import Distiller
from kdistill.methods.crd import CRD
from kdistill.train import distributed
from kdistill.train.distributed import DistContext

NUM_TRAIN = 64
# per step, how many samples each rank sees: uneven shares, as in a short last batch
SHARES = [(5, 4), (5, 4), (3, 2)]


def build(setup_seed: int) -> tuple[Distiller, CRD]:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    student = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    method = CRD("0", "0", feat_dim=8, num_negatives=16)
    distiller = Distiller(teacher=teacher, student=student, methods=[(method, 1.0)])
    torch.manual_seed(setup_seed)  # each rank draws its own random bank; rank 0's must win
    distiller.setup_methods(torch.randn(2, 4), num_train=NUM_TRAIN)
    torch.manual_seed(1)  # the embedding heads must not depend on the rank
    with torch.no_grad():
        for p in [*method.embed_student.parameters(), *method.embed_teacher.parameters()]:
            p.copy_(torch.randn_like(p))
    return distiller, method


def batches() -> list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Per step, each rank's (inputs, labels, indices); indices of one step are distinct."""
    gen = torch.Generator().manual_seed(7)
    steps = []
    for shares in SHARES:
        idx = torch.randperm(NUM_TRAIN, generator=gen)[:sum(shares)]
        x = torch.randn(len(idx), 4, generator=gen)
        y = torch.randint(0, 2, (len(idx),), generator=gen)
        bounds = [0, shares[0], sum(shares)]
        steps.append([(x[lo:hi], y[lo:hi], idx[lo:hi]) for lo, hi in zip(bounds, bounds[1:])])
    return steps


def worker(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    distiller, method = build(setup_seed=rank)
    # as in fit(): the student and CRD's heads are wrapped in DDP, the banks are not broadcast by it
    unwrap = distributed.wrap_trainable(distiller, DistContext(rank, 2), torch.device("cpu"))
    for step in batches():
        x, y, idx = step[rank]
        distiller(x, y, idx)["loss"].backward()
    unwrap()
    torch.save({"student": method.student_bank, "teacher": method.teacher_bank}, out)
    dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_banks_equal_to_one_process_on_the_union(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(tmp_path / "init"),
                               str(tmp_path / f"rank{rank}.pt")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    for proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
    banks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]

    # the reference: one process, rank 0's initial bank, both ranks' samples in every step
    distiller, method = build(setup_seed=0)
    initial = method.student_bank.clone()
    touched = set()
    for step in batches():
        x, y, idx = (torch.cat(parts) for parts in zip(*step))
        distiller(x, y, idx)
        touched |= set(idx.tolist())
    for name in ("student", "teacher"):
        assert torch.equal(banks[0][name], banks[1][name])
        torch.testing.assert_close(banks[0][name], getattr(method, f"{name}_bank"), rtol=0, atol=1e-6)
    changed = (banks[0]["student"] != initial).any(1).nonzero().flatten().tolist()
    assert set(changed) == touched  # every rank's rows were applied, and only those


if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
