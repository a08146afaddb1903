"""Small models shared by the tests (pytest puts this folder on sys.path through conftest.py)."""

import torch
from torch import nn


class Fixed(nn.Module):
    """A 'model' that returns the same preset logits for every input, so a loss can be checked exactly."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.expand(len(x), -1)
