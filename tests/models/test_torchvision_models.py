"""torchvision models in configs: both roles, module-path features, tiny inputs, checkpoints, export.

Needs ``kdistill[vision]`` and a torchvision built for the installed torch;
skipped otherwise.
"""

from __future__ import annotations

import urllib.error

import pytest
import torch

tv_models = pytest.importorskip(
    "torchvision.models", reason="torchvision is not installed (or not built for this torch): "
    "pip install 'kdistill[vision]'", exc_type=ImportError)

from kdistill.compress.export import export_model  # noqa: E402
from kdistill.config import parse_config  # noqa: E402
from kdistill.errors import ConfigError, ModelError  # noqa: E402
from kdistill.experiment import load_model, run_distill  # noqa: E402
from kdistill.models import create_model  # noqa: E402


def test_first_conv_and_head_follow_the_data():
    model = create_model("torchvision/resnet18", (1, 28, 28), 10).eval()
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.default_feature_layer == "layer4"
    assert create_model("torchvision/mobilenet_v3_small", (1, 8, 8), 10).default_feature_layer == "features"
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("torchvision/resnet18", (1, 28, 28), 10, num_classes=1000)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        create_model("torchvision/resnet18", (1, 28, 28), 10, weights="IMAGENET_V9")
    with pytest.raises(ConfigError, match="torchvision/resnet18"):
        create_model("torchvision/resnet17", (1, 28, 28), 10)
    with pytest.raises(ModelError, match="cannot run on images"):
        create_model("torchvision/vgg11", (1, 28, 28), 10)


def test_pretrained_weights_are_adapted_without_a_download(monkeypatch):
    # stands in for the downloaded ImageNet file: a 1000-class, 3-channel state dict
    torch.manual_seed(0)
    imagenet = tv_models.resnet18(num_classes=1000).state_dict()
    monkeypatch.setattr(tv_models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        lambda self, *a, **k: imagenet)
    model = create_model("torchvision/resnet18", (1, 28, 28), 10, weights="IMAGENET1K_V1")
    # one grey channel sees the sum of the RGB filters; the head is new, for 10 classes
    assert torch.allclose(model.conv1.weight, imagenet["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1.weight, imagenet["layer1.0.conv1.weight"])
    assert model.fc.out_features == 10
    assert model.rebuild_options == {"pretrained": False}


def test_pretrained_without_network_is_a_model_error(monkeypatch):
    def offline(self, *_args, **_kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(ModelError, match="internet"):
        create_model("torchvision/resnet18", (1, 28, 28), 10, pretrained=True)


def test_torchvision_teacher_with_module_path_features(tmp_path, capsys):
    from kdistill.cli.main import main

    cfg = parse_config({
        "name": "tv", "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "limit_train": 200, "limit_test": 100},
        "teacher": {"model": "torchvision/resnet18"},
        "student": {"model": "torchvision/shufflenet_v2_x0_5"},
        "teacher_train": {"epochs": 1, "batch_size": 64, "progress": False},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
        "distill": {"methods": [{"name": "kd"}, {"name": "fitnets", "options": {
            "teacher_layer": "layer3", "student_layer": "stage3"}}]},
    })
    result = run_distill(cfg)
    model, meta = load_model(result.checkpoint)
    assert meta["model_spec"]["model"] == "torchvision/shufflenet_v2_x0_5"
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), result.model.eval()(x), atol=1e-6)
    assert main(["evaluate", str(result.checkpoint), "--json"]) == 0
    assert '"accuracy"' in capsys.readouterr().out
    exported = export_model(result.checkpoint, "exported-program")
    assert exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4
