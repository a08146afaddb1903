"""The canvas data sets: shapes, tight boxes, determinism, the cache and option errors."""

import numpy as np
import pytest
import torch

import kdistill.detection.data as canvas
from kdistill.data import find_idx_dir, load_dataset
from kdistill.errors import ConfigError


def test_canvas_digits_shapes_and_task(tiny_options):
    data = load_dataset("canvas-digits", **tiny_options)
    assert data.task == "detection" and data.num_classes == 10 and data.input_shape == (1, 32, 32)
    assert data.x_train.shape == (48, 1, 32, 32) and data.y_train.shape == (48, 2, 5)
    assert data.y_train.dtype == torch.float32
    y = data.y_test.reshape(-1, 5)
    real, pad = y[y[:, 0] >= 0], y[y[:, 0] < 0]
    assert (pad[:, 0] == -1).all() and (pad[:, 1:] == 0).all()
    assert real[:, 0].max() <= 9 and (real[:, 1] < real[:, 3]).all() and (real[:, 2] < real[:, 4]).all()
    assert real[:, 1:].min() >= 0 and real[:, 1:].max() <= 32
    assert ((data.y_train[..., 0] >= 0).sum(1) >= 1).all()  # every canvas has an object
    small = data.subset(10, 4)  # the generic subset keeps the padded targets aligned
    assert small.y_train.shape == (10, 2, 5) and small.task == "detection"


def test_box_is_tight_around_the_glyph(tiny_options):
    # one object per canvas: the box must be exactly the extent of the canvas's non-zero pixels
    data = load_dataset("canvas-digits", **{**tiny_options, "objects": [1, 1]}, normalize=False)
    for image, target in zip(data.x_train[:20], data.y_train[:20]):
        rows = torch.nonzero(image[0].sum(1))[:, 0]
        cols = torch.nonzero(image[0].sum(0))[:, 0]
        expected = [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1]
        assert target[0, 1:].tolist() == expected


def test_tight_box_and_resize_by_hand():
    glyph = np.zeros((5, 5), dtype=np.uint8)
    glyph[1:3, 2:5] = 7
    assert canvas.tight_box(glyph) == (2, 1, 5, 3)  # x2, y2 one past the last non-zero column / row
    assert canvas.tight_box(np.zeros((3, 3), dtype=np.uint8)) is None
    big = canvas.resize_glyph(np.ones((8, 8), dtype=np.float32), 12)
    assert big.shape == (12, 12) and big.dtype == np.uint8 and big.min() == 255


def test_same_seed_same_set_other_seed_other_set(tiny_options):
    a = load_dataset("canvas-digits", **tiny_options, cache=False)
    b = load_dataset("canvas-digits", **tiny_options, cache=False)
    c = load_dataset("canvas-digits", **{**tiny_options, "seed": 1}, cache=False)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)


def test_overlap_is_capped(tiny_options):
    data = load_dataset("canvas-digits", **{**tiny_options, "objects": [2, 2], "max_overlap": 0.0})
    from kdistill.detection.boxes import box_iou

    for t in data.y_train:
        real = t[t[:, 0] >= 0, 1:]
        if len(real) == 2:
            assert box_iou(real[:1], real[1:]).item() == 0.0


def test_cache_is_written_once_and_keyed_by_options(tiny_options, monkeypatch):
    options = {**tiny_options, "seed": 7}
    first = load_dataset("canvas-digits", **options)
    folder = canvas.cache_root() / "canvas"
    files = sorted(folder.glob("sklearn-digits-*.npz"))
    assert files and not list(folder.glob(".*.tmp"))  # written atomically: no temporary left over

    def no_drawing(*args, **kwargs):
        raise AssertionError("a cached set was drawn again")

    with monkeypatch.context() as patch:
        patch.setattr(canvas, "draw_canvases", no_drawing)
        again = load_dataset("canvas-digits", **options)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_train, again.y_train)
    load_dataset("canvas-digits", **{**options, "num_test": 17})  # another option: another file
    assert len(sorted(folder.glob("sklearn-digits-*.npz"))) == len(files) + 1


def test_unreadable_cache_is_rebuilt(tiny_options):
    options = {**tiny_options, "seed": 11}
    first = load_dataset("canvas-digits", **options)
    path = canvas._cache_path("sklearn-digits", canvas.CanvasSpec.checked(
        "canvas-digits", options["canvas_size"], options["objects"], options["scale"], options["num_train"],
        options["num_test"], 0.3, 11))
    path.write_bytes(b"not a zip file")
    again = load_dataset("canvas-digits", **options)
    assert torch.equal(first.y_train, again.y_train)


@pytest.mark.parametrize("options, words", [
    ({"scale": [8, 40]}, "larger than the 32x32 canvas"),
    ({"objects": [3, 1]}, "objects must be [lo, hi]"),
    ({"num_train": 0}, "num_train must be an integer >= 1"),
    ({"max_overlap": 2}, "max_overlap must be an IoU"),
    ({"scale": "big"}, "scale must be [lo, hi]"),
])
def test_bad_options_are_config_errors(options, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_dataset("canvas-digits", **options)


@pytest.mark.skipif(find_idx_dir("mnist") is None and find_idx_dir("fashion-mnist") is None,
                    reason="no MNIST / Fashion-MNIST IDX files found (set KDISTILL_DATA to the shared data folder)")
@pytest.mark.parametrize("name, source", [("canvas-mnist", "mnist"), ("canvas-fashion-mnist", "fashion-mnist")])
def test_canvas_idx_sets(name, source):
    if find_idx_dir(source) is None:
        pytest.skip(f"no {source} IDX files found (set KDISTILL_DATA)")
    data = load_dataset(name, download=False, num_train=20, num_test=5, objects=[1, 3])
    assert data.task == "detection" and data.x_train.shape == (20, 1, 64, 64) and data.y_train.shape == (20, 3, 5)
    assert data.class_names[0] in {"0", "T-shirt/top"}
