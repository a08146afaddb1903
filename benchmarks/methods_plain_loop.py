"""A cross-check of the methods benchmark's KD rows with a plain PyTorch loop (no kdistill training code).

    KDISTILL_DATA=/path/to/data python benchmarks/methods_plain_loop.py --dataset mnist --hidden 32 128

It loads the benchmark's teacher (``<work>/<dataset>/teacher/best.safetensors``,
trained by ``benchmarks/methods/teacher-<dataset>.yaml``; ``--work`` picks an
earlier work folder, e.g. the one with the cnn-medium Fashion-MNIST teacher), computes its logits once, and trains a
784-H-10 MLP (the benchmark's ``mlp-simple`` students) with the benchmark's
schedule: 15 epochs (``--epochs`` changes it, to see whether a longer schedule changes
the picture), batch 128, AdamW lr 2e-3, weight decay 5e-4, cosine
decay per step, on all 60,000 training images (no validation split, last
epoch scored). The loss is written out here, so a reader can compare it with
``kdistill.Distiller`` line by line::

    (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

Only the data loader and the teacher's rebuild come from kdistill.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.data import load_dataset
from kdistill.experiment import load_model

SETTINGS = [(0.0, 1.0), (0.9, 4.0), (0.5, 2.0)]  # (alpha, T): CE only, Hinton's defaults, milder


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 2048]) for i in range(0, len(x), 2048)])


def train_student(data, teacher_logits: torch.Tensor, hidden: int, alpha: float, temperature: float,
                  seed: int, epochs: int = 15, batch: int = 128) -> float:
    """Test accuracy of the student after its last epoch."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    n = len(data.x_train)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((n + batch - 1) // batch))
    for _ in range(epochs):
        for idx in torch.randperm(n).split(batch):
            s = net(data.x_train[idx])
            loss = (1 - alpha) * F.cross_entropy(s, data.y_train[idx])
            if alpha:
                soft = F.softmax(teacher_logits[idx] / temperature, dim=1)
                kl = F.kl_div(F.log_softmax(s / temperature, dim=1), soft, reduction="batchmean")
                loss = loss + alpha * temperature**2 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return (logits_of(net, data.x_test).argmax(1) == data.y_test).float().mean().item()


def parse_settings(pairs: list[str]) -> list[tuple[float, float]] | None:
    """``["0,1", "0.9,4"]`` as (alpha, temperature) pairs; None when one is not a valid pair."""
    settings = []
    for pair in pairs:
        try:
            alpha, temperature = (float(v) for v in pair.split(","))
        except ValueError:
            return None
        if not (0 <= alpha <= 1 and temperature > 0):
            return None
        settings.append((alpha, temperature))
    return settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--work", default="runs/bench-methods")
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=15, help="the schedule's length (the benchmark: 15)")
    parser.add_argument("--settings", nargs="+", metavar="ALPHA,T",
                        help="(alpha, temperature) pairs to train, e.g. 0,1 0.85,1.06 (default: CE only, "
                             "T=4/alpha=0.9, T=2/alpha=0.5)")
    parser.add_argument("--out", help="append one JSON line per run to this file")
    args = parser.parse_args()
    if args.epochs < 1:
        print(f"--epochs takes a positive count of epochs, got {args.epochs}", file=sys.stderr)
        return 2
    settings = parse_settings(args.settings) if args.settings else SETTINGS
    if settings is None:
        print(f"--settings takes ALPHA,T pairs with 0 <= ALPHA <= 1 and T > 0, e.g. 0,1 0.9,4; got "
              f"{' '.join(args.settings)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    if not os.environ.get("KDISTILL_DATA"):
        print("set KDISTILL_DATA to the folder holding mnist/ and fashion-mnist/", file=sys.stderr)
        return 2
    data = load_dataset(args.dataset, download=False)
    teacher, _ = load_model(Path(args.work) / args.dataset / "teacher" / "best.safetensors")
    teacher.eval()
    teacher_logits = logits_of(teacher, data.x_train)
    teacher_acc = (logits_of(teacher, data.x_test).argmax(1) == data.y_test).float().mean().item()
    print(f"{args.dataset}: teacher test accuracy {teacher_acc:.4f}", flush=True)
    for hidden in args.hidden:
        for alpha, temperature in settings:
            for seed in args.seeds:
                acc = train_student(data, teacher_logits, hidden, alpha, temperature, seed, args.epochs)
                row = {"dataset": args.dataset, "hidden": hidden, "alpha": alpha, "T": temperature,
                       "seed": seed, "epochs": args.epochs, "test_accuracy": acc}
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
