"""The max-norm weight constraint (``train.max_norm``, Hinton et al. 2012)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill.config import OptimizerConfig, TrainConfig, parse_config
from kdistill.data import DataSplits
from kdistill.distiller import Supervised
from kdistill.errors import ConfigError
from kdistill.train import fit
from kdistill.train.loop import apply_max_norm


def test_long_rows_are_rescaled_to_the_bound_and_short_ones_left_alone():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]]))  # norms 5 and 0.5
        layer.bias.fill_(7.0)
    apply_max_norm([layer], 2.0)
    assert torch.allclose(layer.weight[0], torch.tensor([1.2, 1.6, 0.0]))  # 5 -> 2, same direction
    assert torch.equal(layer.weight[1], torch.tensor([0.3, 0.4, 0.0]))
    assert torch.equal(layer.bias, torch.full((2,), 7.0))  # biases are not constrained


def test_each_conv_filter_is_one_unit():
    conv = nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight.mul_(100)
    apply_max_norm([conv], 0.5)
    norms = conv.weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((4,), 0.5), atol=1e-6)


def test_fit_keeps_every_unit_within_the_bound_and_the_bound_binds():
    torch.manual_seed(0)
    x, y = torch.randn(256, 10), torch.randint(0, 3, (256,))
    data = DataSplits("toy", x, y, x[:32], y[:32], num_classes=3, input_shape=(10,))

    def trained(max_norm):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
        cfg = TrainConfig(epochs=3, batch_size=32, val_fraction=0, progress=False, max_norm=max_norm,
                          optimizer=OptimizerConfig(name="sgd", lr=0.5, momentum=0.9))
        fit(Supervised(model), data, cfg)
        return [m.weight.detach().norm(dim=1) for m in model if isinstance(m, nn.Linear)]

    free = trained(None)
    bound = 0.6
    assert max(n.max().item() for n in free) > bound  # without the constraint some units grow past it
    for norms in trained(bound):
        assert norms.max().item() <= bound + 1e-5


def test_max_norm_must_be_positive():
    with pytest.raises(ConfigError, match="max_norm"):
        parse_config({"name": "x", "train": {"max_norm": 0}})
