"""The registered loaders: digits, real MNIST (if present), tables and image folders."""


import numpy as np
import pytest
import torch

from kdistill.data import DataSplits, available_datasets, dataset_options, load_dataset
from kdistill.errors import ConfigError, DataError, UnknownNameError


def test_builtins_registered():
    assert {"digits", "mnist", "fashion-mnist", "csv", "table", "image-folder"} <= set(
        available_datasets()
    )


def test_digits():
    data = load_dataset("digits")
    assert isinstance(data, DataSplits)
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 10 and data.task == "classification"
    assert set(data.y_test.tolist()) == set(range(10))  # stratified: every class in test
    assert abs(data.x_train.mean().item()) < 1e-5
    again = load_dataset("digits", data_dir="/ignored")  # digits ignores data_dir
    assert torch.equal(again.x_test, data.x_test)
    # A raw 0 pixel maps to fill_value after standardisation.
    raw = load_dataset("digits", normalize=False)
    assert raw.x_train.min() == 0 and raw.fill_value == 0.0
    assert data.x_train.min().item() == pytest.approx(data.fill_value, abs=1e-5)


def test_unknown_dataset_and_options():
    with pytest.raises(UnknownNameError, match="mnist"):
        load_dataset("mnits")
    with pytest.raises(ConfigError, match="Allowed options: normalize"):
        load_dataset("digits", image_size=8)
    with pytest.raises(ConfigError, match="needs option"):
        load_dataset("csv")
    assert "label_column" in dataset_options("csv")


def test_real_mnist(idx_dir):
    data = load_dataset("mnist", data_dir=idx_dir("mnist"), download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert data.std[0] == pytest.approx(0.3081, abs=1e-4)
    assert torch.bincount(data.y_train).tolist()[:2] == [5923, 6742]


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def test_csv_string_labels_split(tmp_path):
    rows = [[i, i * 2.5, ["cat", "dog", "bird"][i % 3]] for i in range(30)]
    path = write_csv(tmp_path / "animals.csv", ["a", "b", "species"], rows)
    data = load_dataset("csv", path=str(path), label_column="species", test_fraction=0.2)
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.num_train == 24 and data.num_test == 6 and data.input_shape == (2,)
    assert set(data.y_test.tolist()) == {0, 1, 2}
    assert data.x_train.mean(0).abs().max() < 1e-5
    again = load_dataset("csv", path=str(path), label_column="species")
    assert torch.equal(again.x_test, data.x_test)


def test_csv_test_path_and_data_dir(tmp_path):
    write_csv(tmp_path / "train.csv", ["x", "label"], [[i, i % 2 + 1] for i in range(10)])
    write_csv(tmp_path / "test.csv", ["x", "label"], [[i, i % 2 + 1] for i in range(4)])
    data = load_dataset("table", path="train.csv", test_path="test.csv", data_dir=tmp_path)
    assert (data.num_train, data.num_test) == (10, 4)
    assert data.class_names == ["1", "2"] and data.y_train.tolist()[:2] == [0, 1]


def test_csv_regression(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["x", "y"], [[i, i * 0.5] for i in range(20)])
    data = load_dataset("csv", path=path, label_column="y", task="regression")
    assert data.num_classes == 0 and data.task == "regression"
    assert data.y_train.dtype == torch.float32 and data.class_names is None


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("x,label\n", "no data rows"),
        ("x,y\n1,2\n3,4\n", "no label column 'label'"),
        ("x,label\n1,a\nfoo,b\n", "column 1 \\('x'\\), data row 2: the value is not a number"),
        ("x,label\n1,a\n,b\n", "missing"),
        ("x,label\n1,a\n2\n", "fields"),
    ],
)
def test_csv_errors(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_dataset("csv", path=path)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("csv", path=tmp_path / "nope.csv")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"f1": np.arange(20.0), "f2": np.ones(20), "label": ["a", "b"] * 10})
    pq.write_table(table, tmp_path / "t.parquet")
    data = load_dataset("table", path=tmp_path / "t.parquet", test_fraction=0.25)
    assert data.input_shape == (2,) and data.class_names == ["a", "b"] and data.num_test == 5


def make_images(folder, classes, per_class, size=(10, 12), mode="L"):
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = size[::-1] if mode == "L" else (*size[::-1], 3)
            Image.fromarray(np.full(shape, 40 * c + i, np.uint8), mode).save(
                folder / name / f"{i}.png"
            )


def test_image_folder_split(tmp_path):
    pytest.importorskip("PIL")
    make_images(tmp_path / "imgs", ["circle", "square"], per_class=5)
    data = load_dataset("image-folder", path=tmp_path / "imgs", image_size=8, test_fraction=0.4)
    assert data.input_shape == (1, 8, 8) and data.class_names == ["circle", "square"]
    assert (data.num_train, data.num_test) == (6, 4)
    assert sorted(data.y_test.tolist()) == [0, 0, 1, 1]


def test_image_folder_presplit_rgb(tmp_path):
    pytest.importorskip("PIL")
    make_images(tmp_path / "ds" / "train", ["a", "b"], 3, mode="RGB")
    make_images(tmp_path / "ds" / "test", ["a", "b"], 2, mode="RGB")
    data = load_dataset("image-folder", path="ds", data_dir=tmp_path, grayscale=False, image_size=28)
    assert data.x_train.shape == (6, 3, 28, 28) and data.num_test == 4
    assert len(data.mean) == 3
    # unless told otherwise, RGB images stay RGB at their own size (12 high, 10 wide)
    data = load_dataset("image-folder", path="ds", data_dir=tmp_path)
    assert data.x_train.shape == (6, 3, 12, 10) and data.class_names == ["a", "b"]


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="two class sub-folders"):
        load_dataset("image-folder", path=tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "b").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset("image-folder", path=tmp_path / "noimg")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("image-folder", path=tmp_path / "missing")
    (tmp_path / "noimg" / "a" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "noimg" / "b" / "broken-too.png").write_bytes(b"not a png either")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("image-folder", path=tmp_path / "noimg")


@pytest.mark.parametrize("presplit", [False, True])
def test_a_class_folder_without_training_images_is_refused_by_name(tmp_path, presplit):
    pytest.importorskip("PIL")
    root = tmp_path / "ds"
    make_images(root / "train" if presplit else root, ["cat", "dog"], 3, mode="RGB")
    if presplit:
        make_images(root / "test", ["cat", "dog", "fox"], 2, mode="RGB")  # 'fox' only among the test images
    else:
        (root / "fox").mkdir()
        (root / "fox" / "notes.txt").write_text("no image here")
    with pytest.raises(DataError, match=r"1 class folder\(s\) hold no training images: fox .*cannot be learned"):
        load_dataset("image-folder", path=root)
