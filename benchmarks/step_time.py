"""Milliseconds per training step of the 800-800 student and per teacher forward pass.

A micro-benchmark for the thread and precision settings behind
benchmarks/throughput.py: random inputs, no data loading, the median and the
spread of ``--rounds`` timings of ``--steps`` steps each.

    python benchmarks/step_time.py --threads 1 --threads 2 --batch-size 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from _common import device_name

from kdistill.models import create_model


def timings(fn, steps: int, rounds: int) -> list[float]:
    for _ in range(3):
        fn()
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        out.append((time.perf_counter() - start) / steps * 1000)
    return out


def make_steps(batch_size: int, amp: bool) -> dict:
    torch.manual_seed(0)
    student = create_model("hinton-student", (1, 28, 28), 10)
    teacher = create_model("hinton-teacher", (1, 28, 28), 10).eval()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def teacher_forward() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            teacher(x)

    return {"student step": step, "teacher forward": teacher_forward}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, action="append", help="repeatable; default: torch's choice")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{device_name(torch.device('cpu'))}; load average {os.getloadavg()[0]:.2f}")
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for amp in (False, True):
            for name, fn in make_steps(args.batch_size, amp).items():
                t = timings(fn, args.steps, args.rounds)
                print(f"threads {threads} {'bf16' if amp else 'fp32'} {name}: median {statistics.median(t):.1f} ms "
                      f"(min {min(t):.1f}, max {max(t):.1f}) at batch {args.batch_size}")

if __name__ == "__main__":
    main()
