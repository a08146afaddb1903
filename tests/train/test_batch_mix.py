"""Mixup/CutMix on every training batch: the teacher sees the mixed batch, the label term the mixed targets."""

import importlib.util

import pytest
import torch
from torch import nn

from kdistill.config import AugmentConfig, MixConfig, TrainConfig
from kdistill.data import DataSplits
from kdistill.data.augment import BatchMix, build_batch_mix
from kdistill.distiller import Distiller
from kdistill.errors import ConfigError, DataError
from kdistill.methods.dkd import DKD
from kdistill.train import fit


class Recorder(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(2 * 4 * 4, 3)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.linear(x.flatten(1))


class HalfAndHalf:
    """A known mix: each image averaged with the batch reversed, and its labels likewise."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, y):
        mixed = 0.5 * x + 0.5 * x.flip(0)
        onehot = nn.functional.one_hot(y, 3).float()
        targets = 0.5 * onehot + 0.5 * onehot.flip(0)
        self.calls.append((mixed, targets))
        return mixed, targets


def splits(n=12):
    x = torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(n) % 3
    return DataSplits(name="toy", x_train=x, y_train=y, x_test=x[:3], y_test=y[:3], num_classes=3,
                      input_shape=(2, 4, 4))


CFG = TrainConfig(epochs=1, batch_size=64, val_fraction=0.0, progress=False, device="cpu", amp="off",
                  optimizer={"name": "sgd", "lr": 0.1})


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_the_teacher_sees_the_mixed_batch_and_the_label_term_the_mixed_targets(loader):
    teacher, student = Recorder(seed=1).eval(), Recorder(seed=2)
    before = nn.Linear(2 * 4 * 4, 3)
    before.load_state_dict(student.linear.state_dict())
    mix = HalfAndHalf()
    history = fit(Distiller(teacher=teacher, student=student, alpha=0.5, temperature=2.0), splits(), CFG,
                  loader=loader, workers=0, mix=mix)
    (mixed, targets), = mix.calls  # one batch, mixed once
    assert teacher.inputs[-1].shape == mixed.shape and torch.equal(teacher.inputs[-1], mixed)  # live, not cached
    assert torch.equal(student.inputs[-1], mixed)
    expected = nn.functional.cross_entropy(before(mixed.flatten(1)), targets)
    assert history.epochs[0]["student"] == pytest.approx(expected.item(), rel=1e-5)
    hard = nn.functional.cross_entropy(before(mixed.flatten(1)), targets.argmax(1))
    assert abs(hard.item() - expected.item()) > 1e-3  # the soft targets, not a hard label, were used


def test_a_method_that_needs_one_class_per_sample_refuses_mixed_labels():
    distiller = Distiller(teacher=Recorder(1).eval(), student=Recorder(2), methods=[(DKD(), 1.0)])
    with pytest.raises(ConfigError, match="Mixup/CutMix"):
        fit(distiller, splits(), CFG, loader="memory", mix=HalfAndHalf())


def test_the_config_section_is_checked():
    assert AugmentConfig(mix={"mixup_alpha": 0.2}).active
    assert not AugmentConfig().active
    with pytest.raises(ValueError, match="nothing is mixed"):
        MixConfig(mixup_alpha=0, cutmix_alpha=0)
    with pytest.raises(ValueError):
        MixConfig(prob=1.5)
    assert build_batch_mix(None, 10) is None


def _torchvision_importable() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    from kdistill.optional_deps import import_torchvision

    import_torchvision()
    return True


needs_torchvision = pytest.mark.skipif(not _torchvision_importable(),
                                       reason="torchvision (the vision extra) is not installed")


@needs_torchvision
@pytest.mark.parametrize("options", [{"mixup_alpha": 0.8, "cutmix_alpha": 0.0},
                                     {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
                                     {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5}])
def test_torchvision_mixup_and_cutmix_give_class_probabilities(options):
    torch.manual_seed(0)
    mix = build_batch_mix(MixConfig(**options), num_classes=5)
    x, y = torch.rand(8, 3, 6, 6), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    mixed, targets = mix(x, y)
    assert mixed.shape == x.shape and targets.shape == (8, 5)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    assert not torch.equal(mixed, x)  # mixed with another sample of the batch
    assert (targets > 0).sum(1).max() <= 2  # each sample is a mix of at most two classes


@needs_torchvision
def test_an_unmixed_batch_keeps_its_images_and_gets_one_hot_targets():
    mix = BatchMix(num_classes=3, prob=0.0)
    x, y = torch.rand(4, 1, 5, 5), torch.tensor([0, 2, 1, 2])
    mixed, targets = mix(x, y)
    assert torch.equal(mixed, x) and torch.equal(targets, nn.functional.one_hot(y, 3).float())
    with pytest.raises(ConfigError, match="no classes"):
        BatchMix(num_classes=0)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        mix(torch.rand(4, 7), y)


@needs_torchvision
def test_the_config_section_reaches_the_run(tmp_path, capsys):
    import yaml

    from kdistill.cli.main import main

    config = {"data": {"dataset": "digits", "limit_train": 120, "limit_test": 30,
                       "augment": {"mix": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}}},
              "teacher": {"model": "cnn-simple"}, "student": {"model": "cnn-simple"},
              "teacher_train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
              "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["-v", "distill", str(path), "--no-progress", "-o", str(tmp_path / "run")]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long log lines
    assert "the teacher runs live on every augmented batch" in err
