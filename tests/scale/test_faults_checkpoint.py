"""Crafted or foreign checkpoints end in a CheckpointError naming the field or tensor: never a
traceback, never weights silently cast, never a local file's lines printed by `kdistill evaluate`."""

import json

import pytest
import torch
from safetensors.torch import save_file

from kdistill.cli.main import main
from kdistill.data import load_dataset
from kdistill.errors import CheckpointError, ConfigError
from kdistill.experiment import evaluate_checkpoint, load_model
from kdistill.models import create_model
from kdistill.train import read_checkpoint, restore_training_state, save_checkpoint
from kdistill.train.checkpoint import META_KEY, load_state_dict_into

SECRET = "SECRET_TOKEN_9b2e"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def spec(data, model="mlp-simple", **extra):
    return {"model": model, "options": {}, "input_shape": list(data.input_shape),
            "num_classes": data.num_classes, "dataset": "digits", **extra}


def good_checkpoint(path, data, **meta):
    model = create_model("mlp-simple", data.input_shape, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(data.x_train[:8]).sum().backward()
    opt.step()
    base = {"role": "student", "model_spec": spec(data), "epoch": 0, "history": []}
    return save_checkpoint(path, {"model": model}, {**base, **meta}, opt), model, opt


def rewrite(path, tensors=None, meta_update=None, drop=()):
    """Change a checkpoint as a hostile or careless tool would: same format, odd content."""
    old_tensors, meta = read_checkpoint(path)
    tensors = {**old_tensors, **(tensors or {})}
    meta.update(meta_update or {})
    for key in drop:
        meta.pop(key, None)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={META_KEY: json.dumps(meta)})
    return path


@pytest.mark.parametrize("update, match", [
    ({"epoch": "3"}, "'epoch' must be a whole number"),
    ({"epoch": -2}, "'epoch' must be a whole number >= 0"),
    ({"history": "all of it"}, "'history' must be a list"),
    ({"history": [{"loss": "low"}]}, "'history' must be a list"),
    ({"best_score": [1]}, "'best_score' must be a number"),
    ({"train": [1, 2]}, "'train' must be a mapping"),
    ({"train": {"optimizer": "adam"}}, "'train.optimizer' must be a mapping"),
    ({"model_spec": "mlp"}, "'model_spec' must be a mapping"),
    ({"model_spec": {"model": 3, "input_shape": [64], "num_classes": 10}}, "'model_spec.model'"),
    ({"model_spec": {"model": "mlp-simple", "input_shape": [10**9, 10**9], "num_classes": 10}},
     "'model_spec.input_shape'"),
    ({"model_spec": {"model": "mlp-simple", "input_shape": "64", "num_classes": 10}}, "'model_spec.input_shape'"),
    ({"model_spec": {"model": "mlp-simple", "input_shape": [64], "num_classes": -1}}, "'model_spec.num_classes'"),
    ({"model_spec": {"model": "mlp-simple", "input_shape": [64], "num_classes": 10, "options": [1]}},
     "'model_spec.options'"),
    ({"data": {"dataset": "csv", "options": "path=/etc/passwd"}}, "'data.options'"),
    ({"data": {"dataset": "csv", "options": {}, "files": ["path"]}}, "'data.files'"),
    ({"data": {"dataset": 5}}, "'data.dataset'"),
    ({"optimizer": {"param_groups": "x"}}, "'optimizer.param_groups'"),
    ({"optimizer": {"param_groups": [{"params": ["a"]}]}}, "'optimizer.param_groups'"),
    ({"optimizer": {"param_groups": [{"params": [0]}], "scalars": {"x": {}}}}, "'optimizer.scalars'"),
])
def test_malformed_metadata_is_refused_when_read(tmp_path, digits, update, match):
    path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    rewrite(path, meta_update=update)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(path)
    assert main(["evaluate", str(path)]) == 2


def test_unknown_model_and_bad_options_are_checkpoint_errors(tmp_path, digits):
    path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    rewrite(path, meta_update={"model_spec": spec(digits, model="no-such-net")})
    with pytest.raises(CheckpointError, match="holds model 'no-such-net', which is not registered here: pass --plugin"):
        load_model(path)
    rewrite(path, meta_update={"model_spec": spec(digits, options={"hidden": [10**9]})})
    with pytest.raises(CheckpointError, match="cannot be rebuilt.*make hidden"):
        load_model(path)
    rewrite(path, meta_update={"model_spec": {"model": "mlp-simple", "num_classes": 10}})
    with pytest.raises(CheckpointError, match="'model_spec.input_shape' must be"):
        load_model(path)


def test_evaluating_on_data_of_another_shape_is_refused(tmp_path, digits):
    path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    other = digits.subset(50, 20)
    other.x_test = other.x_test.reshape(len(other.x_test), -1)
    other.input_shape = (64,)
    with pytest.raises(ConfigError, match=r"built for samples of shape \(1, 8, 8\)"):
        evaluate_checkpoint(path, other)


@pytest.mark.parametrize("dtype", [torch.float16, torch.int8, torch.float64])
def test_tensor_dtype_that_does_not_match_the_model_is_refused(tmp_path, digits, dtype):
    path, model, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    weight = model.state_dict()["features.0.0.weight"]
    rewrite(path, tensors={"model.features.0.0.weight": (weight * 100).to(dtype)})
    with pytest.raises(CheckpointError, match=f"tensor 'features.0.0.weight' is stored as {dtype}"):
        load_model(path)


def test_users_pytorch_weights_may_be_half_precision_but_not_integers(digits):
    model = create_model("mlp-simple", digits.input_shape, digits.num_classes)
    half = {k: v.half() for k, v in model.state_dict().items()}
    load_state_dict_into(model, half, "teacher.pt")
    ints = {k: v.to(torch.int8) for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="stored as torch.int8"):
        load_state_dict_into(model, ints, "teacher.pt")


def test_optimizer_state_that_does_not_fit_is_refused(tmp_path, digits):
    path, model, opt = good_checkpoint(tmp_path / "c.safetensors", digits)
    fresh = create_model("mlp-simple", digits.input_shape, digits.num_classes)

    def restore():
        return restore_training_state(path, {"model": fresh}, torch.optim.Adam(fresh.parameters()))

    restore()  # the untouched checkpoint resumes
    rewrite(path, tensors={"optim.0.exp_avg": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=r"tensor 'optim.0.exp_avg' is torch.float32 \(3, 3\)"):
        restore()
    path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    rewrite(path, tensors={"optim.99.exp_avg": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="names no parameter"):
        restore()
    saved = read_checkpoint(path)[1]["optimizer"]["param_groups"][0]
    for groups, match in (([saved, {**saved, "params": []}], "2 parameter groups saved, 1 now"),
                          ([{**saved, "params": [0]}], "a group of 1 parameters saved, 4 now"),
                          ([{**saved, "lr": "fast"}], "setting 'lr' is str, expected a number"),
                          ([{**saved, "betas": [0.9]}], "'betas' is a list of 1, expected a list of 2")):
        path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
        optim_meta = read_checkpoint(path)[1]["optimizer"]
        rewrite(path, meta_update={"optimizer": {**optim_meta, "param_groups": groups}})
        with pytest.raises(CheckpointError, match=match):
            restore()


def test_random_state_of_the_wrong_size_is_refused(tmp_path, digits):
    path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    fresh = create_model("mlp-simple", digits.input_shape, digits.num_classes)
    rewrite(path, tensors={"rng.cpu": torch.zeros(7, dtype=torch.uint8)})
    with pytest.raises(CheckpointError, match="random-number state"):
        restore_training_state(path, {"model": fresh}, None)
    rewrite(path, drop=("epoch",))
    with pytest.raises(CheckpointError, match="records no 'epoch'"):
        restore_training_state(path, {"model": fresh}, None)


def secret_files(tmp_path):
    """Local files a hostile checkpoint could point kdistill at, each holding a secret line."""
    passwd = tmp_path / "passwd"
    passwd.write_text(f"root:x:0:1:{SECRET}:/root:/bin/bash\n"
                      f"daemon:x:1:1:{SECRET}2:/usr/sbin:/usr/sbin/nologin\n")
    as_json = tmp_path / "secret.json"
    as_json.write_text(json.dumps({"model": {"type": SECRET, "vocab": {SECRET: 0}}}))
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": SECRET, "note": SECRET}))
    (folder / "tokenizer.json").write_text(SECRET)
    return passwd, as_json, folder


def test_crafted_data_record_never_prints_local_files(tmp_path, digits, capsys):
    passwd, as_json, folder = secret_files(tmp_path)
    records = [
        {"dataset": "csv", "options": {"path": str(passwd)}},
        {"dataset": "csv", "options": {"path": str(passwd), "label_column": "root"}},
        {"dataset": "csv", "options": {"path": str(passwd), "delimiter": ":"}},
        {"dataset": "csv", "options": {"path": str(passwd), "delimiter": ":", "label_column": "x"}},
        {"dataset": "csv", "options": {"path": str(passwd), "delimiter": ":", "label_column": "root",
                                       "task": "regression"}},
        {"dataset": "text-csv", "options": {"path": str(passwd), "delimiter": ":"}},
        {"dataset": "text-csv", "options": {"path": str(passwd), "text_column": "root",
                                            "label_column": "x", "delimiter": ":"}},
        {"dataset": "image-folder", "options": {"path": str(tmp_path)}},
    ]
    if _has_transformers():
        text_table = tmp_path / "texts.csv"
        text_table.write_text("text,label\na b,0\nc d,1\ne f,0\ng h,1\ni j,0\n")
        records += [
            {"dataset": "text-csv", "options": {"path": str(text_table), "tokenizer": str(as_json)}},
            {"dataset": "text-csv", "options": {"path": str(text_table), "tokenizer": str(folder)}},
            {"dataset": "text-csv", "options": {"path": str(text_table), "tokenizer": str(passwd)}},
        ]
    for i, record in enumerate(records):
        path, _, _ = good_checkpoint(tmp_path / f"c{i}.safetensors", digits)
        rewrite(path, meta_update={"data": {"data_dir": None, "download": False, "files": [], **record}})
        assert main(["evaluate", str(path)]) == 2, record
        captured = capsys.readouterr()
        assert SECRET not in captured.err + captured.out, record
        assert "Traceback" not in captured.err
    if _has_transformers():
        path, _, _ = good_checkpoint(tmp_path / "m.safetensors", digits)
        rewrite(path, meta_update={"model_spec": {**spec(digits, model="hf-classifier"), "input_shape": [16],
                                                  "options": {"pretrained": str(folder)}}})
        assert main(["evaluate", str(path), "--dataset", "digits"]) == 2
        assert SECRET not in capsys.readouterr().err


def _has_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- metadata is user input


@pytest.mark.parametrize("update, match", [
    ({"format": "zip-bomb"}, "'format' must be one of dense, state-dict, sparse-bitmask"),
    ({"format": 3}, "'format' must be one of"),
    ({"history": [{"loss": 0.5}]}, "'history' must be a list of per-epoch records, each with its 'epoch'"),
    ({"history": [{"epoch": True, "loss": 0.5}]}, "'history' must be a list of per-epoch records"),
    ({"epoch": True}, "'epoch' must be a whole number"),
    ({"target_scale": {"mean": 0.0, "std": 0.0}}, "'target_scale.std' must be a positive finite number"),
    ({"sparse_shapes": {"w": [10**6, 10**6]}}, "'sparse_shapes' must be a mapping of tensor names"),
    ({"model_spec": {"model": "mlp-simple", "input_shape": [64], "num_classes": 10,
                     "variational": {"threshold": "high"}}}, "'model_spec.variational.threshold' must be a number"),
    ({"data": {"dataset": "csv", "options": {"download": True}}}, "'data.options'"),
])
def test_metadata_schema_refuses_what_kdistill_would_follow(tmp_path, digits, update, match):
    path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    rewrite(path, meta_update=update)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(path)


def test_a_data_record_naming_a_device_or_fifo_is_refused_before_reading(tmp_path, digits, capsys):
    import os
    from pathlib import Path

    targets = [p for p in ("/dev/zero", "/proc/self/environ") if Path(p).exists()]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.csv")  # evaluate would block forever reading it
        targets.append(str(tmp_path / "pipe.csv"))
    assert targets
    for i, target in enumerate(targets):
        path, _, _ = good_checkpoint(tmp_path / f"c{i}.safetensors", digits)
        rewrite(path, meta_update={"data": {"dataset": "csv", "options": {"path": target}, "data_dir": None,
                                            "download": False, "files": ["path"]}})
        assert main(["evaluate", str(path)]) == 2, target
        err = capsys.readouterr().err
        assert any(kind in err for kind in ("character device", "named pipe", "lies under /proc")), err
        assert "Traceback" not in err


def test_a_checkpoint_never_makes_evaluate_download(tmp_path, digits, monkeypatch, capsys):
    from kdistill.data import sources

    def no_network(url, timeout=60.0):
        raise AssertionError(f"evaluate contacted the network: {url}")

    monkeypatch.setattr(sources, "fetch_bytes", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    path, _, _ = good_checkpoint(tmp_path / "c.safetensors", digits)
    rewrite(path, meta_update={"data": {"dataset": "mnist", "options": {}, "data_dir": str(tmp_path / "none"),
                                        "download": True, "files": []}})
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "never starts a download" in err and "--dataset mnist" in err


def test_pretrained_weights_named_by_a_checkpoint_are_never_fetched(tmp_path, digits):
    from kdistill.models import MLP, offline_options, register_model

    seen = []

    @register_model("faults-pretrained", overwrite=True)
    def downloads_when_pretrained(input_shape, num_classes, *, pretrained=False):
        seen.append(pretrained)  # a real model would download its weights here
        return MLP(64, [32], num_classes)

    model = downloads_when_pretrained(digits.input_shape, digits.num_classes)
    path = save_checkpoint(tmp_path / "c.safetensors", {"model": model},
                           {"model_spec": spec(digits, model="faults-pretrained", options={"pretrained": True})})
    load_model(path)
    assert seen == [False, False]
    # library models: pretrained and torchvision's weights name a download, so both are dropped
    assert offline_options("timm/resnet18", {"pretrained": True, "drop_rate": 0.1}) == {
        "pretrained": False, "drop_rate": 0.1}
    assert offline_options("torchvision/resnet18", {"weights": "DEFAULT"}) == {"pretrained": False}
    assert offline_options("hf-classifier", {"pretrained": "some/folder"}) == {"pretrained": "some/folder"}


def test_a_dense_file_relabelled_sparse_is_refused(tmp_path, digits, capsys):
    from kdistill.compress.artifact import save_dense

    model = create_model("mlp-simple", digits.input_shape, digits.num_classes)
    path = save_dense(model, tmp_path / "dense.safetensors", {"model_spec": spec(digits)})
    rewrite(path, meta_update={"format": "sparse-bitmask"})
    # a plain state dict is a sparse file with no masked tensor: it loads as exactly the weights it holds
    loaded = load_model(path)[0]
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    _, meta = read_checkpoint(path)  # tensors that are not the model's
    save_file({f"model.{k}": v for k, v in model.state_dict().items()}, str(path),
              metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match="does not fit the model it records"):
        load_model(path)
    rewrite(path, meta_update={"sparse_shapes": {"features.0.0.weight": [64, 128]}})
    with pytest.raises(CheckpointError, match="lacks the mask or values"):
        load_model(path)
    assert main(["export", str(path), "--format", "safetensors", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_resuming_from_history_records_without_their_epoch_is_refused(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"data: {{dataset: digits, limit_train: 64, limit_test: 16}}\nstudent: {{model: mlp-simple}}\n"
                      f"train: {{epochs: 1, batch_size: 32, progress: false, device: cpu}}\n"
                      f"output_dir: {tmp_path / 'runs'}\n")
    assert main(["train", str(config), "--role", "student"]) == 0
    last = tmp_path / "runs" / "student" / "last.safetensors"
    tensors, meta = read_checkpoint(last)
    rewrite(last, meta_update={"history": [{k: v for k, v in r.items() if k != "epoch"} for r in meta["history"]]})
    capsys.readouterr()
    assert main(["train", str(config), "--role", "student", "--epochs", "2", "--resume", str(last)]) == 2
    err = capsys.readouterr().err
    assert "'history' must be a list of per-epoch records, each with its 'epoch'" in err
    assert "Traceback" not in err
