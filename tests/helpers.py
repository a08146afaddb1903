"""Small models and helpers shared by the tests (pytest puts this folder on sys.path through conftest.py)."""

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn


class Fixed(nn.Module):
    """A 'model' that returns the same preset logits for every input, so a loss can be checked exactly."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def write_config(folder: Path, base: dict, **changes) -> Path:
    """``base`` with top-level sections replaced by ``changes``, written to ``folder/cfg.yaml``."""
    raw = json.loads(json.dumps(base))
    raw.update(changes)
    path = Path(folder) / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def err_text(capsys) -> str:
    """Everything written to stderr, whitespace collapsed (rich wraps long log lines)."""
    return " ".join(capsys.readouterr().err.split())


def write_colour_folder(root: Path, per_class: int, size: tuple[int, int] = (12, 16)) -> Path:
    """An image folder of RGB PNGs in classes red, green and blue: each class's colour dominates its images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green", "blue"]):
        (Path(root) / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
            pixels[..., c] = 200
            Image.fromarray(pixels, "RGB").save(Path(root) / name / f"{i}.png")
    return Path(root)
