"""Variant (e) of benchmarks/throughput.py: the KD job run by torchdistill.

Runs in its own virtual environment (torchdistill pulls in torchvision, which
kdistill never depends on), so it imports nothing from kdistill: MNIST is read
from the IDX files with numpy and standardised as kdistill does, and the two
MLPs are spelled out in plain PyTorch with the same shapes as
``hinton-teacher`` / ``hinton-student``. The training loop is the one in
torchdistill's own image-classification example: a DistillationBox built from
the YAML config, ``forward_process`` and ``post_forward_process`` per batch,
and the loss read with ``.item()`` for its metric logger. Prints one JSON line.

    /tmp/td-venv/bin/python benchmarks/torchdistill_job.py --data-dir ../shared/data --epochs 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchdistill.common.yaml_util import load_yaml_file
from torchdistill.core.distillation import get_distillation_box

CONFIG = Path(__file__).with_name("torchdistill-mnist-kd.yaml")


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_train(folder: Path, limit: int | None) -> TensorDataset:
    def find(stem: str) -> Path:
        return next(p for p in (folder / f"{stem}.gz", folder / stem) if p.exists())

    x = torch.from_numpy(read_idx(find("train-images-idx3-ubyte")).copy()).float().div_(255).unsqueeze(1)
    y = torch.from_numpy(read_idx(find("train-labels-idx1-ubyte")).astype(np.int64))
    x = (x - x.mean()) / x.std()
    if limit:
        x, y = x[:limit], y[:limit]
    return TensorDataset(x, y)


def mlp(hidden: tuple[int, ...], dropout: float) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9, help="weight of the soft term (kdistill's meaning)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--limit-train", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    config = load_yaml_file(str(CONFIG))
    train_config = config["train"]
    train_config["num_epochs"] = args.epochs
    train_config["train_data_loader"]["kwargs"]["batch_size"] = args.batch_size
    train_config["train_data_loader"]["kwargs"]["pin_memory"] = device.type == "cuda"
    train_config["optimizer"]["kwargs"].update(lr=args.lr, momentum=args.momentum)
    kd = train_config["criterion"]["kwargs"]["sub_terms"]["kd"]["criterion"]["kwargs"]
    kd.update(temperature=args.temperature, alpha=1.0 - args.alpha)

    torch.manual_seed(0)
    teacher, student = mlp((1200, 1200), 0.5).to(device), mlp((800, 800), 0.0).to(device)
    teacher.eval()  # frozen and deterministic, as in kdistill (torchdistill only switches the student's mode)
    dataset_dict = {"mnist/train": mnist_train(args.data_dir / "mnist", args.limit_train)}
    box = get_distillation_box(teacher, student, dataset_dict, train_config, device, None, False, 1)
    epoch_seconds = []
    for epoch in range(args.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        box.pre_epoch_process(epoch=epoch)
        losses = []
        for sample_batch, targets, supp_dict in box.train_data_loader:
            sample_batch, targets = sample_batch.to(device), targets.to(device)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            losses.append(loss.item())
        box.post_epoch_process()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - start)
    print(json.dumps({"epoch_seconds": epoch_seconds, "setup_seconds": 0.0, "last_loss": losses[-1]}))


if __name__ == "__main__":
    main()
