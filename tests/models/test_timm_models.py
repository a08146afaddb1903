"""timm models in configs: both roles, module-path features, tiny inputs, checkpoints, export.

Needs ``kdistill[vision]``; skipped otherwise (torchvision from PyPI needs a
matching torch, so these run in an environment built for it).
"""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm", reason="timm is not installed: pip install 'kdistill[vision]'")

from kdistill.compress.export import export_model  # noqa: E402
from kdistill.config import parse_config  # noqa: E402
from kdistill.errors import ConfigError, ModelError  # noqa: E402
from kdistill.experiment import load_model, run_distill  # noqa: E402
from kdistill.models import create_model  # noqa: E402


def test_28x28_single_channel_and_options():
    model = create_model("timm/test_resnet", (1, 28, 28), 10).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model.default_feature_layer == "layer4"
    assert create_model("timm/test_efficientnet", (1, 8, 8), 10).default_feature_layer == "blocks.4"
    assert model.rebuild_options == {"pretrained": False}
    create_model("timm/test_resnet", (1, 28, 28), 10, num_classes=10, in_chans=1)  # agreeing is fine
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("timm/test_resnet", (1, 28, 28), 10, num_classes=1000)
    with pytest.raises(ConfigError, match="in_chans"):
        create_model("timm/test_resnet", (1, 28, 28), 10, in_chans=3)
    with pytest.raises(ConfigError, match="timm/resnet18"):
        create_model("timm/resnt18", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="not supported"):
        create_model("timm/test_resnet", (1, 28, 28), 10, checkpoint_path="/tmp/x.pth")
    # a ViT sized for 224 is refused with the fix; sized for the data it works
    with pytest.raises(ModelError, match="img_size"):
        create_model("timm/test_vit", (1, 28, 28), 10)
    vit = create_model("timm/test_vit", (1, 28, 28), 10, img_size=28, patch_size=4)
    assert vit(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_pretrained_without_network_is_a_model_error(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*_args, **_kwargs):
        raise LocalEntryNotFoundError("cannot reach the Hub and the file is not in the cache")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(ModelError, match="pretrained: false"):
        create_model("timm/test_resnet", (1, 28, 28), 10, pretrained=True)


def test_timm_teacher_and_student_with_module_path_features(tmp_path, capsys):
    from kdistill.cli.main import main

    cfg = parse_config({
        "name": "timm", "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "limit_train": 200, "limit_test": 100},
        "teacher": {"model": "timm/test_resnet", "options": {"pretrained": False}},
        "student": {"model": "timm/test_efficientnet"},
        "teacher_train": {"epochs": 1, "batch_size": 64, "progress": False},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
        "distill": {"methods": [{"name": "kd"}, {"name": "fitnets", "options": {
            "teacher_layer": "layer3", "student_layer": "blocks.3"}}]},
    })
    result = run_distill(cfg)
    assert result.checkpoint is not None and torch.isfinite(torch.tensor(result.history[0]["loss"]))
    # the checkpoint rebuilds the student from its name and options alone
    model, meta = load_model(result.checkpoint)
    assert meta["model_spec"]["model"] == "timm/test_efficientnet"
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), result.model.eval()(x), atol=1e-6)
    teacher, _ = load_model(tmp_path / "teacher" / "best.safetensors")
    assert teacher.default_feature_layer == "layer4"
    assert main(["evaluate", str(result.checkpoint), "--json"]) == 0
    assert '"accuracy"' in capsys.readouterr().out
    for fmt in ("onnx", "exported-program"):
        exported = export_model(result.checkpoint, fmt)
        assert exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4
