"""Bad data files and loader options end in a DataError / ConfigError naming the file or option,
and no message quotes what a file holds."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kdistill.data import DataSplits, load_dataset, read_idx
from kdistill.data.datasets import image_folder as image_folder_module
from kdistill.errors import ConfigError, DataError
from kdistill.registry import register_dataset

SECRET = "SECRET_TOKEN_4f1c"


def csv(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def good_csv(tmp_path, rows=20):
    return csv(tmp_path, "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(rows)))


def test_header_only_and_empty_tables_name_the_file(tmp_path):
    path = csv(tmp_path, "a,label\n")
    with pytest.raises(DataError, match=f"{path}.*no data rows"):
        load_dataset("csv", path=str(path))
    empty = csv(tmp_path, "", "empty.csv")
    with pytest.raises(DataError, match=f"{empty}.*empty"):
        load_dataset("csv", path=str(empty))


def test_a_loader_that_leaves_a_split_empty_is_refused():
    def empty_test() -> DataSplits:
        x = torch.zeros(4, 2)
        return DataSplits("tiny", x, torch.zeros(4, dtype=torch.long), x[:0], torch.zeros(0, dtype=torch.long),
                          2, (2,))

    register_dataset("faults-empty-test", overwrite=True)(empty_test)
    with pytest.raises(DataError, match="no test samples"):
        load_dataset("faults-empty-test")
    data = load_dataset("digits")
    with pytest.raises(DataError, match="need at least 1"):
        data.subset(0, 10)


@pytest.mark.parametrize("options, match", [
    ({"delimiter": ";;"}, "delimiter must be a single character"),
    ({"delimiter": 3}, "delimiter must be a single character"),
    ({"delimiter": ""}, "delimiter must be a single character"),
    ({"delimiter": "\n"}, "delimiter must be a single character"),
    ({"path": 3}, "path must be a file or folder path"),
    ({"path": ["a.csv"]}, "path must be a file or folder path"),
    ({"path": ""}, "path must be a file or folder path"),
    ({"test_path": 7}, "test_path must be a file or folder path"),
    ({"seed": "x"}, "seed must be a whole number"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"seed": -1}, "seed must be a whole number"),
    ({"seed": 2**40}, "seed must be a whole number"),
    ({"test_fraction": 0}, r"test_fraction must be a number in \(0, 1\)"),
    ({"test_fraction": 1.5}, r"test_fraction must be a number in \(0, 1\)"),
    ({"test_fraction": "half"}, "test_fraction must be a number"),
    ({"test_fraction": True}, "test_fraction must be a number"),
    ({"label_column": 3}, "label_column must be a non-empty string"),
    ({"task": "clustering"}, "task must be one of"),
    ({"normalize": "yes"}, "normalize must be true or false"),
])
def test_table_options_of_the_wrong_type(tmp_path, options, match):
    kwargs = {"path": str(good_csv(tmp_path)), **options}
    with pytest.raises(ConfigError, match=match):
        load_dataset("csv", **kwargs)


@pytest.mark.parametrize("label", ["", "nan", "NaN", "inf", "-inf", "Infinity"])
def test_empty_nan_and_inf_labels_are_refused(tmp_path, label):
    path = csv(tmp_path, "a,label\n1,0\n2,1\n3," + label + "\n4,0\n5,1\n")
    with pytest.raises(DataError, match=r"label column 'label', data row 3: the label is"):
        load_dataset("csv", path=str(path))


def test_bad_label_in_the_test_file_names_the_test_file(tmp_path):
    train = good_csv(tmp_path)
    test = csv(tmp_path, "a,b,label\n1,2,0\n3,4,nan\n", "test.csv")
    with pytest.raises(DataError, match=f"{test}.*data row 2"):
        load_dataset("csv", path=str(train), test_path=str(test))


def test_duplicate_header_names_are_refused(tmp_path):
    path = csv(tmp_path, "a,a,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    with pytest.raises(DataError, match="header columns 1 and 2 have the same name"):
        load_dataset("csv", path=str(path))


def test_messages_never_quote_what_a_file_holds(tmp_path):
    # a checkpoint's data record can point the loader at any local file: its lines stay private
    cases = [
        (f"{SECRET},x\n1,2\n3,4\n", {}),                        # no 'label' column
        (f"a,label\n{SECRET},0\n1,1\n2,0\n", {}),               # a non-numeric feature
        (f"a,{SECRET}\n1,0\n2,1\n", {"label_column": "y"}),
        (f"root:x:0:0:{SECRET}:/root:/bin/bash\ndaemon:x:1:1\n", {}),  # /etc/passwd-like
        ("a,b,label\n1,2,0\n3,4,1\n", {"test_path": "TEST"}),
    ]
    for i, (text, options) in enumerate(cases):
        path = csv(tmp_path, text, f"c{i}.csv")
        if options.get("test_path") == "TEST":
            options = {"test_path": str(csv(tmp_path, f"x,{SECRET},label\n1,2,0\n", f"t{i}.csv"))}
        with pytest.raises(DataError) as info:
            load_dataset("csv", path=str(path), **options)
        assert SECRET not in str(info.value), i
        assert "root:x" not in str(info.value)
    text_path = csv(tmp_path, f"{SECRET},{SECRET}2\nx,y\n", "text.csv")
    with pytest.raises(DataError) as info:
        load_dataset("text-csv", path=str(text_path), tokenizer="unused")
    assert SECRET not in str(info.value)


def test_idx_gzip_bomb_is_refused(tmp_path, monkeypatch):
    import gzip

    from kdistill.data import idx

    monkeypatch.setattr(idx, "MAX_IDX_BYTES", 1000)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 2049, 5000) + bytes(5000)))
    with pytest.raises(DataError, match="decompression bomb"):
        read_idx(path)



def test_idx_header_claiming_more_than_the_gzip_can_hold_is_refused_before_inflating(tmp_path, monkeypatch):
    import gzip

    from kdistill.data import idx

    # 1M 28x28 images announced by a file of a few hundred bytes: refused from the header and the size
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 1_000_000, 28, 28) + bytes(784)))
    inflated = []
    real_open = gzip.open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        read = handle.read
        handle.read = lambda size=-1: inflated.append(size) or read(size)
        return handle

    monkeypatch.setattr(idx.gzip, "open", counting_open)
    with pytest.raises(DataError, match=r"announces shape \(1000000, 28, 28\).*refused before inflating"):
        read_idx(path)
    assert sum(inflated) <= 16  # the magic number and the three sizes, nothing more
    # a consistent header: 8 MB of zeros that compress to 8 kB, far beyond what images compress to
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 10_000, 28, 28) + bytes(7_840_000)))
    with pytest.raises(DataError, match="decompression bomb"):
        read_idx(bomb)
    # a plain file whose header claims 1M images but holds one is truncated, read no further than its size
    plain = tmp_path / "plain-idx3-ubyte"
    plain.write_bytes(struct.pack(">IIII", 2051, 1_000_000, 28, 28) + bytes(784))
    with pytest.raises(DataError, match="truncated"):
        read_idx(plain)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs named pipes")
def test_fifos_devices_and_kernel_files_are_refused_without_reading(tmp_path):
    import os

    fifo = tmp_path / "table.csv"
    os.mkfifo(fifo)  # reading it would block forever: the check must not open it
    with pytest.raises(DataError, match="named pipe"):
        load_dataset("csv", path=str(fifo))
    idx_fifo = tmp_path / "images-idx3-ubyte"
    os.mkfifo(idx_fifo)
    with pytest.raises(DataError, match="named pipe"):
        read_idx(idx_fifo)
    if Path("/dev/zero").exists():
        with pytest.raises(DataError, match="character device"):
            load_dataset("csv", path="/dev/zero")
        link = tmp_path / "zero.csv"
        link.symlink_to("/dev/zero")
        with pytest.raises(DataError, match="character device"):
            load_dataset("csv", path=str(link))
    if Path("/proc/self/environ").exists():
        with pytest.raises(DataError, match="lies under /proc"):
            load_dataset("csv", path="/proc/self/environ")


def test_a_data_dir_holding_some_idx_files_is_refused_not_mixed_with_others(tmp_path, monkeypatch, caplog):
    from kdistill.data import sources
    from kdistill.data.idx import write_idx_dataset

    def tiny(folder):
        zeros = np.zeros((4, 28, 28), np.uint8)
        return write_idx_dataset(folder, zeros, np.arange(4) % 10, zeros, np.arange(4) % 10)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(sources.ENV_VAR, str(tiny(tmp_path / "env")))  # a complete copy elsewhere
    partial = tiny(tmp_path / "partial")
    (partial / sources.FILES["test_images"]).unlink()
    with pytest.raises(DataError, match=r"holds only some of the mnist files: t10k-images-idx3-ubyte.gz is missing"):
        load_dataset("mnist", data_dir=partial, download=False)
    # a data_dir without any of the files: the search goes on, and says where the data came from
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level("WARNING", logger="kdistill"):
        assert load_dataset("mnist", data_dir=empty, download=False).num_train == 4
    assert f"data_dir {empty} does not hold the mnist files; using {tmp_path / 'env'}" in caplog.text


# ------------------------------------------------------------------ image folders

def image_tree(tmp_path, size=(12, 12), per_class=4):
    from PIL import Image

    root = tmp_path / "images"
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full(size, 40 * i, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_without_images_names_the_folder(tmp_path):
    root = tmp_path / "empty"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    with pytest.raises(DataError, match=f"{root} has no images"):
        load_dataset("image-folder", path=str(root))
    split = image_tree(tmp_path)
    for name in ("cats", "dogs"):
        (split / "train" / name).mkdir(parents=True)
        (split / "test" / name).mkdir(parents=True)
        for file in (split / name).iterdir():
            file.rename(split / "train" / name / file.name)
    with pytest.raises(DataError, match=f"{split / 'test'} has no images"):
        load_dataset("image-folder", path=str(split))


def test_truncated_and_corrupt_images_name_the_file(tmp_path):
    root = image_tree(tmp_path)
    victim = root / "cats" / "1.png"
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DataError, match=f"Cannot read image {victim}"):
        load_dataset("image-folder", path=str(root))
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(DataError, match=f"Cannot read image {victim}"):
        load_dataset("image-folder", path=str(root))


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    from PIL import Image

    root = image_tree(tmp_path, size=(30, 30))
    monkeypatch.setattr(image_folder_module, "MAX_PIXELS", 500)
    with pytest.raises(DataError, match="claims 30x30 pixels.*decompression bomb"):
        load_dataset("image-folder", path=str(root))
    # Pillow's own limit (it raises above twice MAX_IMAGE_PIXELS, warns above it)
    monkeypatch.setattr(image_folder_module, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    with pytest.raises(DataError, match="decompression bomb"):
        load_dataset("image-folder", path=str(root))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 800)  # 900 pixels: only a warning from Pillow
    with pytest.raises(DataError, match="decompression bomb"):
        load_dataset("image-folder", path=str(root))


@pytest.mark.parametrize("options, match", [
    ({"image_size": 10**6}, "image_size must be"),
    ({"image_size": [0, 5]}, "image_size must be"),
    ({"image_size": [8, 8, 8]}, "image_size must be"),
    ({"image_size": "28"}, "image_size must be"),
    ({"grayscale": "no"}, "grayscale must be true or false"),
    ({"seed": "1"}, "seed must be"),
    ({"path": None}, "path must be"),
])
def test_image_folder_options(tmp_path, options, match):
    root = image_tree(tmp_path)
    with pytest.raises(ConfigError, match=match):
        load_dataset("image-folder", **{"path": str(root), **options})


def test_image_folder_memory_estimate_is_checked_before_decoding(tmp_path, monkeypatch):
    root = image_tree(tmp_path)
    monkeypatch.setattr(image_folder_module, "MAX_DATA_BYTES", 1000)
    with pytest.raises(DataError, match="GiB of memory.*data.loader: stream"):
        load_dataset("image-folder", path=str(root), image_size=64, loader="memory")
    # auto streams a set too large for memory instead of refusing it
    data = load_dataset("image-folder", path=str(root), image_size=64)
    assert type(data).__name__ == "StreamSplits" and data.input_shape[1:] == (64, 64)


# ------------------------------------------------------------------ tokenizers

@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    (json.dumps({"model": {"type": "WordLevel"}}), "not a tokenizer.json"),
    (json.dumps({"model": {"vocab": {"a": "zero"}}}), "not a tokenizer.json"),
    (json.dumps({"model": {"vocab": [["a", "x"]]}}), "not a tokenizer.json"),
    (json.dumps([1, 2, 3]), "not a tokenizer.json"),
    (json.dumps({"model": {"vocab": {"a": 0}}, "added_tokens": "x"}), "not a tokenizer.json"),
    (json.dumps({"model": {"type": "NoSuchModel", "vocab": {SECRET: 0}}}), "could not be loaded"),
])
def test_malformed_tokenizer_files(tmp_path, content, match):
    pytest.importorskip("transformers", reason="tokenizers need kdistill[nlp]")
    from kdistill.text.hf import load_tokenizer

    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        load_tokenizer(str(path))
    assert SECRET not in str(info.value)


def test_bad_tokenizer_sources_and_text_options(tmp_path):
    pytest.importorskip("transformers", reason="tokenizers need kdistill[nlp]")
    from kdistill.text.hf import load_tokenizer

    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": SECRET}))
    (folder / "tokenizer.json").write_text(f"{{{SECRET}")
    with pytest.raises(DataError) as info:
        load_tokenizer(str(folder))
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="folder path or a package name"):
        load_tokenizer(["not", "a", "path"])
    path = csv(tmp_path, "text,label\na,0\nb,1\nc,0\nd,1\n", "texts.csv")
    for options, match in (({"max_length": 10**9}, "max_length must be"), ({"tokenizer": 3}, "tokenizer must be"),
                           ({"augment_copies": -1}, "augment_copies"), ({"mask_prob": 2}, "mask_prob"),
                           ({"cache": "no"}, "cache must be true or false")):
        with pytest.raises(ConfigError, match=match):
            load_dataset("text-csv", path=str(path), **options)



def test_image_folders_under_proc_and_unreadable_class_folders(tmp_path, monkeypatch):
    from pathlib import Path as RealPath

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    if RealPath("/proc/self").is_dir():
        with pytest.raises(DataError, match="lies under /proc"):
            load_dataset("image-folder", path="/proc/self")
        (tmp_path / "c").symlink_to("/proc/self")  # a class folder that is the kernel's view of a process
        with pytest.raises(DataError, match="Class folder .*lies under /proc"):
            load_dataset("image-folder", path=str(tmp_path))
        (tmp_path / "c").unlink()

    def unreadable(self, pattern):
        raise PermissionError(13, "Permission denied", str(self))

    (tmp_path / "a" / "x.png").write_bytes(b"")  # (root reads every folder: the refusal is simulated)
    monkeypatch.setattr(RealPath, "rglob", unreadable)
    with pytest.raises(DataError, match=r"Cannot list the images under .*\(.*/a\): Permission denied"):
        load_dataset("image-folder", path=str(tmp_path))
