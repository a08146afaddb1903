"""``timm/NAME`` and ``torchvision/NAME`` lookups that need neither library installed."""

from __future__ import annotations

import sys

import pytest

from kdistill.errors import ConfigError, UnknownNameError
from kdistill.models import create_model
from kdistill.registry import MODELS


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_missing_extra_names_the_pip_command(monkeypatch, source):
    # a None entry makes the import fail as if the package were absent
    monkeypatch.setitem(sys.modules, source, None)
    monkeypatch.setitem(sys.modules, f"{source}.models", None)
    with pytest.raises(ConfigError, match=r"pip install 'kdistill\[vision\]'"):
        create_model(f"{source}/resnet18", (1, 28, 28), 10)


def test_unknown_source_suggests_the_library():
    with pytest.raises(UnknownNameError, match="'timm/resnet18'"):
        create_model("timmm/resnet18", (1, 28, 28), 10)
    # a library model named without its source is suggested with it
    with pytest.raises(UnknownNameError, match="'timm/resnet18'"):
        MODELS.get("resnet18")


def test_shape_options_of_zoo_models_are_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("cnn-simple", (1, 28, 28), 10, num_classes=10)


def test_registered_names_still_win():
    assert MODELS.get("cnn-simple") is MODELS.get("cnn-simple")
    with pytest.raises(UnknownNameError, match="cnn-simple"):
        MODELS.get("cnn-simpel")
