"""Safe loading: a malicious pickle or YAML tag is refused with a clear error and never runs."""

import subprocess
import sys

import pytest
import torch

from kdistill.config import parse_config
from kdistill.data import load_dataset
from kdistill.errors import CheckpointError, ConfigError
from kdistill.experiment import get_teacher
from kdistill.models import create_model
from kdistill.train.checkpoint import load_torch_weights


class WritesAFile:
    """Unpickling this would create ``marker``: the classic pickle payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "pwned"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kdistill", *args], capture_output=True, text=True, timeout=300)


def assert_refused(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("kdistill: error:")
    for fragment in fragments:
        assert fragment in result.stderr


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "teacher.pt"
    torch.save({"layer.weight": WritesAFile(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused.*weights_only=True"):
        load_torch_weights(evil)
    assert not marker.exists()

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: digits, limit_train: 100, limit_test: 20}}\n"
                   f"teacher: {{model: mlp-simple, checkpoint: {evil}}}\nstudent: {{model: mlp-simple}}\n"
                   f"output_dir: {tmp_path / 'runs'}\ntrain: {{epochs: 1, progress: false}}\n")
    assert_refused(run_cli("distill", str(cfg)), "refused", str(evil))
    assert not marker.exists()


def test_plain_state_dict_teacher_loads_and_bad_ones_are_explained(tmp_path):
    data = load_dataset("digits").subset(64, 16)
    source = create_model("mlp-simple", data.input_shape, data.num_classes)
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    cfg = parse_config({"teacher": {"model": "mlp-simple", "checkpoint": str(path)},
                        "student": {"model": "mlp-simple"}})
    teacher = get_teacher(cfg, data, tmp_path)
    assert not teacher.training
    for a, b in zip(source.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(a, b)
    wrong = parse_config({"teacher": {"model": "mlp-deep", "checkpoint": str(path)}, "student": {"model": "mlp-simple"}})
    with pytest.raises(CheckpointError, match="does not fit the configured model"):
        get_teacher(wrong, data, tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch"):
        load_torch_weights(tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_torch_weights(tmp_path / "list.pt")


@pytest.mark.parametrize("tag", ["!!python/object/apply:pathlib.Path.touch", "!!python/name:os.system"])
def test_yaml_tags_that_build_objects_are_refused(tmp_path, tag):
    from kdistill.config import load_config

    marker = tmp_path / "marker"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"name: {tag} [{marker}]\nstudent: {{model: mlp-simple}}\n")
    with pytest.raises(ConfigError, match="refuses"):
        load_config(cfg)
    assert not marker.exists()


def test_yaml_tag_through_the_cli(tmp_path):
    marker = tmp_path / "marker"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"student: !!python/object/apply:pathlib.Path.touch [{marker}]\n")
    assert_refused(run_cli("train", str(cfg), "--role", "student"), "refuses", "never construct objects")
    assert not marker.exists()
