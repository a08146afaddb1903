"""Feature layers by module path: defaults, errors, adapters, and what the exported student holds."""

import pytest
import torch
from torch import nn

from kdistill.config import TrainConfig
from kdistill.data import load_dataset
from kdistill.distiller import Distiller, build_method
from kdistill.errors import ConfigError
from kdistill.experiment import load_model
from kdistill.methods import default_feature_layer, make_adapter
from kdistill.models import create_model
from kdistill.train import fit, read_checkpoint

FEATURE_METHODS = ["fitnets", "at", "nst", "pkt", "rkd", "sp", "crd"]


@pytest.mark.parametrize("name, expected", [("resnet-simple", "layer3"), ("cnn-simple", "features"),
                                            ("mlp-simple", "features"), ("hinton-student", "features")])
def test_default_layers_for_zoo_models(name, expected):
    shape = (1, 8, 8) if not name.startswith(("mlp", "hinton")) else (64,)
    assert default_feature_layer(create_model(name, shape, 10)) == expected


def test_default_layer_for_a_user_model():
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
    model.add_module("head", nn.Linear(8, 2))
    assert default_feature_layer(model) == "body"


def test_misspelled_layer_lists_valid_paths():
    teacher, student = create_model("cnn-simple", (1, 8, 8), 10), create_model("cnn-simple", (1, 8, 8), 10)
    method = build_method("fitnets", {"student_layer": "featurs.1"}, 4.0)
    with pytest.raises(ConfigError, match=r"Did you mean 'features.1'.*Valid module paths: .*classifier"):
        Distiller(teacher=teacher, student=student, methods=[(method, 1.0)])


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="student_layer"):
        build_method("crd", {"negatives": 10}, 4.0)


def test_adapters_bridge_shapes():
    conv = make_adapter(torch.Size([2, 16, 4, 4]), torch.Size([2, 64, 2, 2]))
    assert conv(torch.randn(2, 16, 4, 4)).shape == (2, 64, 2, 2)
    flat = make_adapter(torch.Size([2, 32]), torch.Size([2, 128]))
    assert flat(torch.randn(2, 32)).shape == (2, 128)


@pytest.mark.parametrize("name", FEATURE_METHODS + ["dkd", "regression"])
def test_method_loss_falls_when_training(name):
    """Optimiser steps on one fixed batch must lower the method's own loss term.

    CRD draws fresh random negatives every step, so its loss is noisy: compare
    averages over the first and last steps, after more (gentler) steps.
    """
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    teacher = create_model("cnn-simple", (1, 8, 8), 10, widths=[8, 16])
    student = create_model("cnn-simple", (1, 8, 8), 10, widths=[4, 8])
    method = build_method(name, {"num_negatives": 16} if name == "crd" else {}, 4.0)
    distiller = Distiller(teacher=teacher, student=student, alpha=0.0, methods=[(method, 1.0)])
    distiller.setup_methods(x[:2], len(x))
    params = [p for m in distiller.trainable_modules().values() for p in m.parameters()]
    steps, lr = (120, 3e-3) if name == "crd" else (40, 1e-2)
    opt = torch.optim.Adam(params, lr=lr)
    idx = torch.arange(len(x))
    distiller.train()
    history = []
    for _ in range(steps):
        out = distiller(x, y, idx)
        value = sum(v for k, v in out.items() if k not in {"loss", "student", "kd"})
        history.append(value.item())
        opt.zero_grad()
        value.backward()
        opt.step()
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.9 * first, history


def test_exported_student_never_contains_adapters(tmp_path):
    data = load_dataset("digits").subset(120, 40)
    teacher = create_model("cnn-simple", data.input_shape, 10, widths=[8, 16])
    student = create_model("cnn-simple", data.input_shape, 10, widths=[4, 8])
    methods = [(build_method("fitnets", {}, 4.0), 1.0), (build_method("crd", {"feat_dim": 8}, 4.0), 0.5)]
    distiller = Distiller(teacher=teacher, student=student, methods=methods)
    history = fit(distiller, data, TrainConfig(epochs=1, batch_size=32, progress=False), out_dir=tmp_path,
                  metadata={"model_spec": {"model": "cnn-simple", "options": {"widths": [4, 8]},
                                           "input_shape": [1, 8, 8], "num_classes": 10}})
    tensors, _ = read_checkpoint(history.best_path)
    model_keys = {k for k in tensors if k.startswith("model.")}
    assert model_keys == {f"model.{k}" for k in student.state_dict()}
    assert any(k.startswith("methods.0.regressor") for k in tensors)
    assert any(k.startswith("methods.1.student_bank") for k in tensors)
    exported, _ = load_model(history.best_path)
    assert set(exported.state_dict()) == set(student.state_dict())
