"""Runs are reproducible: the seed fixes the initial weights, whatever ran before."""

import torch

from kdistill.config import parse_config
from kdistill.experiment import train_model


def test_same_seed_same_model_regardless_of_history(tmp_path):
    cfg = parse_config({"data": {"dataset": "digits", "limit_train": 200, "limit_test": 50},
                        "student": {"model": "mlp-simple"},
                        "train": {"epochs": 1, "progress": False, "device": "cpu"}})
    first = train_model(cfg, "student", out_dir=tmp_path / "a").model
    torch.rand(1000)  # disturb the global RNG between the runs
    second = train_model(cfg, "student", out_dir=tmp_path / "b").model
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
