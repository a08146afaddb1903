"""The built-in model zoo: shapes, sizes, names and option checking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill.errors import ConfigError, UnknownNameError
from kdistill.models import create_model, list_models

FAMILIES = {
    "mlp": ["mlp-simple", "mlp-medium", "mlp-deep"],
    "cnn": ["cnn-simple", "cnn-medium", "cnn-deep"],
    "resnet": ["resnet-simple", "resnet-medium", "resnet-deep"],
}
HINTON = ["hinton-teacher", "hinton-student"]
ZOO = [name for names in FAMILIES.values() for name in names] + HINTON
FLAT_OK = {name for name in ZOO if name.startswith(("mlp", "hinton"))}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_zoo_is_registered() -> None:
    assert set(ZOO) <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (64,)])
def test_forward_shape(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) == 1 and name not in FLAT_OK:
        with pytest.raises(ConfigError, match="image input"):
            create_model(name, shape, 10)
        return
    model = create_model(name, shape, 10).eval()
    with torch.no_grad():
        out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mlp-simple", "cnn-simple", "resnet-simple"])
def test_regression_has_one_output(name: str) -> None:
    model = create_model(name, (1, 8, 8), 0).eval()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 1)


def test_backward_in_train_mode() -> None:
    model = create_model("resnet-simple", (1, 8, 8), 10)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sizes_increase_within_family(family: str) -> None:
    counts = [n_params(create_model(n, (1, 28, 28), 10)) for n in FAMILIES[family]]
    assert counts[0] < counts[1] < counts[2]


def test_size_classes() -> None:
    assert n_params(create_model("mlp-simple", (1, 28, 28), 10)) < 50_000
    assert n_params(create_model("cnn-simple", (1, 28, 28), 10)) < 50_000
    assert 500_000 <= n_params(create_model("resnet-deep", (1, 28, 28), 10)) <= 2_000_000


def test_hinton_parameter_counts_are_exact() -> None:
    teacher = 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    student = 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    assert n_params(create_model("hinton-teacher", (1, 28, 28), 10)) == teacher == 2_395_210
    assert n_params(create_model("hinton-student", (1, 28, 28), 10)) == student == 1_276_810
    assert n_params(create_model("hinton-student", (64,), 10)) == (
        64 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    )


def test_hinton_dropout() -> None:
    teacher = create_model("hinton-teacher", (1, 28, 28), 10, input_dropout=0.2)
    rates = [m.p for m in teacher.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.2, 0.5, 0.5]
    student = create_model("hinton-student", (1, 28, 28), 10)
    assert not any(isinstance(m, nn.Dropout) for m in student.modules())


def test_convnets_keep_spatial_size_at_least_2x2() -> None:
    for name in ["cnn-deep", "resnet-deep"]:
        model = create_model(name, (1, 8, 8), 10).eval()
        body = (
            model.features
            if name.startswith("cnn")
            else nn.Sequential(model.stem, model.layer1, model.layer2, model.layer3)
        )
        assert body(torch.randn(1, 1, 8, 8)).shape[-2:] == (2, 2)


def test_stable_module_names() -> None:
    resnet = dict(create_model("resnet-medium", (1, 28, 28), 10).named_modules())
    assert {"stem", "layer1", "layer2", "layer3", "pool", "fc"} <= set(resnet)
    cnn = dict(create_model("cnn-medium", (1, 28, 28), 10).named_modules())
    assert {"features", "features.0", "features.2", "pool", "classifier"} <= set(cnn)
    # Block indices must not depend on the image size (checkpoints, hooks).
    small = create_model("cnn-medium", (1, 8, 8), 10).state_dict()
    assert list(small) == list(create_model("cnn-medium", (1, 28, 28), 10).state_dict())


def test_width_and_channel_options() -> None:
    model = create_model("cnn-simple", (3, 16, 16), 5, widths=[4, 8, 8], dropout=0.1)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    resnet = create_model("resnet-simple", (3, 8, 8), 4, widths=(8, 8, 8), depths=(1, 2, 1))
    assert resnet(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    mlp = create_model("mlp-medium", (10,), 3, hidden=[7], dropout=0.3)
    assert n_params(mlp) == 10 * 7 + 7 + 7 * 3 + 3


def test_unknown_model_lists_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_model("resnet-deeep", (1, 28, 28), 10)
    message = str(info.value)
    assert "resnet-deep" in message and "mlp-simple" in message
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("name", "kwargs", "allowed"),
    [
        ("mlp-simple", {"widths": [3]}, "dropout, hidden"),
        ("cnn-deep", {"depth": 3}, "convs_per_block, dropout, widths"),
        ("resnet-deep", {"dropout": 0.1}, "depths, widths"),
        ("hinton-teacher", {"hidden": [10]}, "dropout, input_dropout"),
    ],
)
def test_unknown_option_names_allowed_ones(name: str, kwargs: dict, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"Allowed options: {allowed}"):
        create_model(name, (1, 28, 28), 10, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mlp-simple", {"dropout": 1.0}),
        ("mlp-simple", {"hidden": [0]}),
        ("cnn-simple", {"widths": "16"}),
        ("resnet-simple", {"depths": [1, 1]}),
    ],
)
def test_bad_option_values(name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=name):
        create_model(name, (1, 8, 8), 10, **kwargs)


def test_bad_shapes_and_classes() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("mlp-simple", (1, 8, 8), -1)
    with pytest.raises(ConfigError, match="input_shape"):
        create_model("mlp-simple", (0, 8), 10)
