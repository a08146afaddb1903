"""Per-sample augmentation in DataLoader workers, with the teacher live on the augmented batch."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kdistill.config import AugmentConfig, TrainConfig, parse_config
from kdistill.data.augment import AugmentedDataset, build_transform
from kdistill.data.streaming import StreamSplits
from kdistill.distiller import Distiller, Supervised
from kdistill.errors import ConfigError, DataError
from kdistill.train import fit


class Mirror:
    """Left-right mirror of 8-bit pixels: what a transform sees and returns."""

    def __init__(self):
        self.dtypes = set()

    def __call__(self, pixels):
        self.dtypes.add(pixels.dtype)
        return pixels.flip(-1)


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2 * 4 * 4, 3)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.linear(x.flatten(1))


def images(n=24):
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (n, 2, 4, 4), generator=gen).float() / 255
    mean, std = (0.5, 0.4), (0.25, 0.2)
    x = (raw - torch.tensor(mean).reshape(1, -1, 1, 1)) / torch.tensor(std).reshape(1, -1, 1, 1)
    return StreamSplits("img", TensorDataset(x, torch.arange(n) % 3), TensorDataset(x[:6], torch.arange(6) % 3),
                        3, (2, 4, 4), mean=mean, std=std), x


def test_an_augmented_sample_round_trips_through_8_bit_pixels():
    data, x = images()
    mirror = Mirror()
    augmented = AugmentedDataset(data.train, mirror, data.mean, data.std)
    out, y = augmented[3]
    assert mirror.dtypes == {torch.uint8} and y == 0
    torch.testing.assert_close(out, x[3].flip(-1), atol=0.5 / 255 / 0.2, rtol=0)  # 8-bit rounding only
    with pytest.raises(DataError, match="keep the training size"):
        AugmentedDataset(data.train, lambda p: p[:, :2], data.mean, data.std)[0]
    with pytest.raises(DataError, match="shaped \\(C, H, W\\)"):
        AugmentedDataset(TensorDataset(torch.zeros(2, 5), torch.zeros(2)), mirror)[0]


def test_a_transform_that_fails_on_an_image_is_a_config_error_in_words_also_from_a_worker():
    from torch.utils.data import DataLoader

    from kdistill.workers import worker_errors_in_words

    def negative_crop(pixels):
        raise RuntimeError("Input and output sizes should be greater than 0, but got output (H: -3, W: 4)")

    data, _ = images()
    with pytest.raises(ConfigError, match=r"^data.augment: the image transform failed on training sample 0, an "
                                          r"image of shape \(2, 4, 4\): Input and output sizes .* \(H: -3, W: 4\)\. "
                                          r"Check the options of data.augment.transforms"):
        AugmentedDataset(data.train, negative_crop, data.mean, data.std)[0]
    loader = DataLoader(AugmentedDataset(data.train, negative_crop, data.mean, data.std), batch_size=4,
                        num_workers=1)
    with pytest.raises(ConfigError) as raised:
        list(worker_errors_in_words(loader))
    assert str(raised.value).startswith("data.augment: the image transform failed on training sample 0")
    assert "Traceback" not in str(raised.value)


def test_the_teacher_runs_live_on_the_students_augmented_batch(tmp_path):
    data, x = images()
    teacher = Recorder()
    distiller = Distiller(teacher=teacher, student=nn.Sequential(nn.Flatten(), nn.Linear(32, 3)))
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, device="cpu", val_fraction=0.0)
    fit(distiller, data, cfg, out_dir=tmp_path, workers=0, transform=Mirror())
    assert distiller.teacher_cache is None
    seen = torch.cat(teacher.inputs[-3:])  # the three training batches, after the set-up checks
    mirrored = x.flip(-1)
    # every sample the teacher saw is a mirrored training image, never an original one
    for sample in seen:
        distance = (mirrored - sample).flatten(1).abs().amax(1).min()
        assert distance < 0.02
    with pytest.raises(ConfigError, match="streaming path"):
        fit(Supervised(nn.Sequential(nn.Flatten(), nn.Linear(32, 3))), data, cfg, loader="memory",
            transform=Mirror())


def test_transforms_are_named_in_the_config():
    cfg = parse_config({"data": {"augment": {"transforms": [
        {"name": "RandomResizedCrop", "options": {"size": 32, "scale": [0.5, 1.0]}},
        {"name": "TrivialAugmentWide"}]}}})
    assert cfg.data.augment.active and cfg.data.augment.transforms[0].options["size"] == 32
    assert parse_config({"data": {"augment": {"timm": {"auto_augment": "rand-m9-mstd0.5"}}}}).data.augment.active
    with pytest.raises(ConfigError, match="transforms.0.name"):
        parse_config({"data": {"augment": {"transforms": [{"options": {}}]}}})
    assert build_transform([], None, (3, 8, 8)) is None


def test_torchvision_transforms_are_built_by_class_name_only():
    aug = AugmentConfig.model_validate({"transforms": [{"name": "RandomHorizontalFlip", "options": {"p": 1.0}}]})
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs torchvision"):
            build_transform(aug.transforms, None, (3, 8, 8))
        pytest.skip("torchvision is not installed (pip install 'kdistill[vision]'); the refusal was checked")
    flip = build_transform(aug.transforms, None, (3, 8, 8))
    pixels = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    assert torch.equal(flip(pixels), pixels.flip(-1))
    for bad in ("Lambda", "Compose", "__class__", "os.system", "functional"):
        with pytest.raises(ConfigError, match="not a torchvision.transforms.v2 transform"):
            build_transform(AugmentConfig.model_validate({"transforms": [{"name": bad}]}).transforms, None,
                            (3, 8, 8))


def test_timm_create_transform_in_the_workers():
    pytest.importorskip("timm", reason="timm is not installed (pip install 'kdistill[vision]')")
    transform = build_transform([], {"scale": [0.5, 1.0], "hflip": 0.5}, (3, 16, 16))
    pixels = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    out = transform(pixels)
    assert out.shape == (3, 16, 16) and 0 <= out.min() and out.max() <= 1


def test_options_a_library_refuses_in_its_own_way_are_config_errors_in_words():
    pytest.importorskip("timm", reason="timm is not installed (pip install 'kdistill[vision]')")
    # timm refuses an unknown auto-augment policy with a bare assert
    with pytest.raises(ConfigError, match="^data.augment.timm: create_transform refused these options: "):
        build_transform([], {"auto_augment": "bogus-m9"}, (3, 16, 16))
    with pytest.raises(ConfigError, match="^data.augment.transforms: RandAugment: num_ops"):
        build_transform(AugmentConfig.model_validate(
            {"transforms": [{"name": "RandAugment", "options": {"num_ops": -2}}]}).transforms, None, (3, 8, 8))


def test_a_transform_that_returns_no_tensor_is_refused_in_words():
    data, _ = images()
    with pytest.raises(ConfigError, match="returned an object of type list, not an image tensor"):
        AugmentedDataset(data.train, lambda pixels: [pixels], data.mean, data.std)[0]
