"""Fuzzing configs and data files: every bad input is a KDistillError (exit code 2), never a crash.

Hypothesis draws config mappings (schema keys mixed with garbage, values of
every type), random YAML text, random and damaged IDX files and CSV tables.
Each must either load correctly or raise the matching error class.
"""

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdistill.config import load_config, parse_config
from kdistill.data import load_dataset, read_idx, read_idx_pair, write_idx, write_idx_dataset
from kdistill.distiller import build_method
from kdistill.errors import ConfigError, DataError, KDistillError
from kdistill.models import create_model
from kdistill.registry import DATASETS

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=8))
# the edges of the numeric bounds (kdistill.config MAX_*): values that overflow inside torch if let through
extreme = (st.sampled_from([0, -1, 1e-300, 1e3, 1e3 + 1e-9, 1e300, -1e308, 2 ** 63, 2 ** 64 + 1, 10 ** 30])
           | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2 ** 70), 2 ** 70))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def section(keys, special=None):
    special = special or {}
    key = st.sampled_from(keys) | st.text(max_size=6)
    return st.dictionaries(key, st.one_of(*special.values(), values) if special else values, max_size=5).map(
        lambda d: {k: v for k, v in d.items()}) | st.fixed_dictionaries(
        {k: s for k, s in special.items()}, optional={k: values for k in keys if k not in special})


MODEL = section(["model", "options", "checkpoint"], {"model": st.sampled_from(
    ["mlp-simple", "cnn-simple", "resnet-simple", "hinton-student", "no-such-net"]),
    "options": st.dictionaries(st.sampled_from(["hidden", "widths", "dropout", "depth", "width", "x"]),
                               values, max_size=2)})
CONFIGS = st.fixed_dictionaries({}, optional={
    "name": values, "output_dir": values,
    "data": section(["dataset", "options", "limit_train", "limit_test", "augment", "download", "data_dir"],
                    {"dataset": st.sampled_from(["digits", "mnist", "csv", "nope"])}),
    "teacher": MODEL, "student": MODEL,
    "distill": section(["alpha", "temperature", "method", "methods", "terms", "scheme"],
                       {"method": st.sampled_from(["kd", "nope"]), "alpha": st.floats(-1, 2),
                        "terms": st.lists(st.fixed_dictionaries(
                            {"name": st.sampled_from(["ce", "kd", "dkd", "nope"])},
                            optional={"weight": extreme, "options": st.dictionaries(
                                st.sampled_from(["temperature", "warmup_epochs", "x"]), extreme, max_size=2)}),
                            max_size=3),
                        "scheme": st.fixed_dictionaries(
                            {"name": st.sampled_from(["born-again", "noisy-student", "nope"])},
                            optional={"options": st.dictionaries(
                                st.sampled_from(["generations", "rounds", "input_noise"]), extreme, max_size=2)})}),
    "train": section(["epochs", "batch_size", "optimizer", "scheduler", "seed", "device", "amp",
                      "val_fraction", "grad_clip", "max_norm", "batch_scope", "lr_scaling"],
                     {"epochs": extreme, "batch_size": extreme, "seed": extreme, "max_norm": extreme,
                      "optimizer": st.fixed_dictionaries(
                          {"name": st.sampled_from(["sgd", "adamw", "nope"])},
                          optional={"lr": extreme, "weight_decay": extreme, "momentum": extreme})}),
    "tune": section(["search", "pruner", "startup_trials"],
                    {"search": st.dictionaries(st.sampled_from(["distill.alpha", "train.lr", "x"]), values,
                                               max_size=2)}),
    "garbage": values,
})


def preflight(cfg):
    """The cheap checks a run makes before training: models, methods, data set name, search keys."""
    for model_cfg in (cfg.teacher, cfg.student):
        if model_cfg is not None:
            create_model(model_cfg.model, (1, 8, 8), 10, **model_cfg.options)
    for method in cfg.distill.method_list():
        build_method(method.name, method.options, cfg.distill.temperature)
    DATASETS.get(cfg.data.dataset)
    # one optimiser step at the configured lr and decay: a value past the bounds would overflow here
    from torch import nn

    from kdistill.train.optim import build_optimizer

    layer = nn.Linear(2, 2)
    optimizer = build_optimizer({"student": layer}, cfg.train.optimizer)
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    if cfg.tune.search:
        from kdistill.tune import _midpoint, apply_params, normalised_dump

        apply_params(normalised_dump(cfg), {k: _midpoint(s) for k, s in cfg.tune.search.items()})


@FUZZ
@given(CONFIGS)
def test_config_mappings_validate_or_raise_config_error(data):
    try:
        cfg = parse_config(data)
    except ConfigError as error:
        assert str(error).startswith("Invalid config")
        return
    try:
        preflight(cfg)
    except KDistillError:
        pass


@FUZZ
@given(st.text(max_size=80) | CONFIGS.map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_yaml_text_loads_or_raises_config_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError:
        pass


@FUZZ
@given(st.binary(max_size=48))
def test_random_bytes_as_idx(tmp_path, raw):
    path = tmp_path / "random-idx"
    path.write_bytes(raw)
    try:
        array = read_idx(path)
    except DataError:
        return
    # a file that reads must be exactly what its header announces
    ndim = raw[3]
    assert array.shape == struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])


@FUZZ
@given(n=st.integers(0, 4), labels=st.lists(st.integers(0, 255), min_size=4, max_size=4),
       cut=st.integers(0, 80), magic=st.sampled_from([None, 2049, 2051, 0x0803, 0x0C01, 12345678]),
       target=st.sampled_from(["images", "labels"]), gz=st.booleans())
def test_damaged_idx_pairs(tmp_path, n, labels, cut, magic, target, gz):
    suffix = ".gz" if gz else ""
    images_path = write_idx(tmp_path / f"images{suffix}", np.zeros((n, 4, 4), np.uint8))
    labels_path = write_idx(tmp_path / f"labels{suffix}", np.array(labels[:n], np.uint8))
    damaged = images_path if target == "images" else labels_path
    raw = gzip.decompress(damaged.read_bytes()) if gz else damaged.read_bytes()
    if magic is not None:
        raw = struct.pack(">I", magic) + raw[4:]
    raw = raw[:len(raw) - cut] if cut else raw
    damaged.write_bytes(gzip.compress(raw) if gz else raw)
    try:
        images, ys = read_idx_pair(images_path, labels_path, image_shape=(4, 4), num_classes=10)
    except DataError:
        return
    assert len(images) == len(ys) == n and images.shape[1:] == (4, 4)
    assert ((ys >= 0) & (ys < 10)).all()  # never a silent out-of-range label


@FUZZ
@given(st.text(alphabet=st.sampled_from("0123456789.,-\n\tlabe xnaif\x00"), max_size=80))
def test_csv_tables_load_or_raise_data_error(tmp_path, text):
    path = tmp_path / "table.csv"
    path.write_text(text, encoding="utf-8")
    try:
        data = load_dataset("csv", path=str(path))
    except DataError:
        return
    assert np.isfinite(data.x_train.numpy()).all() and np.isfinite(data.x_test.numpy()).all()
    assert len(data.x_train) and len(data.x_test)
    assert int(data.y_train.max()) < data.num_classes and int(data.y_train.min()) >= 0


def _mnist_dir(tmp_path, labels=(1, 2)):
    return write_idx_dataset(tmp_path / "mnist", np.zeros((2, 28, 28)), np.array(labels),
                             np.zeros((2, 28, 28)), np.array((0, 1)))


def test_mnist_labels_out_of_range_are_refused(tmp_path):
    folder = _mnist_dir(tmp_path, labels=(1, 42))
    with pytest.raises(DataError, match="labels in 1..42"):
        load_dataset("mnist", data_dir=folder, download=False)


def _bad_data_config(tmp_path, case):
    if case == "empty-csv":
        (tmp_path / "empty.csv").write_text("")
        data = f"{{dataset: csv, options: {{path: {tmp_path / 'empty.csv'}}}}}"
    else:
        folder = _mnist_dir(tmp_path, labels=(1, 42) if case == "labels-out-of-range" else (1, 2))
        victim = folder / "train-images-idx3-ubyte.gz"
        raw = gzip.decompress(victim.read_bytes())
        raw = raw[:-100] if case == "truncated-idx" else (struct.pack(">I", 2049) + raw[4:])
        if case != "labels-out-of-range":
            victim.write_bytes(gzip.compress(raw))
        data = f"{{dataset: mnist, download: false, data_dir: {folder}}}"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {data}\nstudent: {{model: mlp-simple}}\noutput_dir: {tmp_path / 'runs'}\n")
    return cfg


EXPECTED = {"truncated-idx": "truncated", "wrong-magic": "magic number", "labels-out-of-range": "labels in",
            "empty-csv": "empty"}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_data_files_give_exit_2_and_one_line(tmp_path, case, capsys):
    from kdistill.cli.main import main

    cfg = _bad_data_config(tmp_path, case)
    assert main(["train", str(cfg), "--role", "student"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdistill: error:") and "Traceback" not in err and EXPECTED[case] in err
    assert not (tmp_path / "runs").exists()


def test_bad_data_file_in_a_real_process_exits_2(tmp_path):
    cfg = _bad_data_config(tmp_path, "truncated-idx")
    result = subprocess.run([sys.executable, "-m", "kdistill", "train", str(cfg), "--role", "student"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("kdistill: error:")
    assert "truncated" in result.stderr
