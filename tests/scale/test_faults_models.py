"""Absurd model sizes are refused by the option's name before anything is allocated."""

import time

import pytest

from kdistill.cli.main import main
from kdistill.errors import ConfigError
from kdistill.models import create_model
from kdistill.models._common import MAX_PARAMETERS

IMAGE = (1, 28, 28)


@pytest.mark.parametrize("name, options, option", [
    ("mlp-simple", {"hidden": [1_000_000_000]}, "hidden"),
    ("mlp-deep", {"hidden": [100_000, 100_000]}, "hidden"),
    ("mlp-simple", {"hidden": [1] * 5000}, "hidden"),
    ("cnn-simple", {"widths": [1_000_000, 1_000_000]}, "widths"),
    ("cnn-simple", {"convs_per_block": 10**9}, "convs_per_block"),
    ("cnn-medium", {"widths": [64, 64, 10**6], "convs_per_block": 3}, "widths"),
    ("resnet-simple", {"widths": [16, 32, 10**6]}, "widths"),
    ("resnet-simple", {"depths": [10**6, 1, 1]}, "depths"),
])
def test_huge_image_models_are_refused_quickly(name, options, option):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=option) as info:
        create_model(name, IMAGE, 10, **options)
    assert time.perf_counter() - started < 1.0
    assert len(str(info.value)) < 400


def test_huge_inputs_or_class_counts_are_refused():
    with pytest.raises(ConfigError, match="parameters"):
        create_model("hinton-teacher", (3, 4096, 4096), 10)
    with pytest.raises(ConfigError, match="number of classes"):
        create_model("mlp-simple", (1, 8, 8), 10**10)


def test_the_zoo_is_well_inside_the_budget():
    model = create_model("resnet-deep", IMAGE, 10)
    assert sum(p.numel() for p in model.parameters()) < MAX_PARAMETERS // 1000


@pytest.mark.parametrize("name, options, match", [
    ("tiny-transformer", {"hidden": 10**6, "heads": 1}, "hidden, intermediate"),
    ("tiny-transformer", {"layers": 10**6}, "layers must be at most"),
    ("tiny-transformer", {"vocab_size": 10**12, "pad_id": 0}, "vocab_size must be from 1"),
    ("tiny-transformer", {"embedding_dim": 10**6, "vocab_size": 30000, "pad_id": 0}, "embedding_dim"),
    ("bilstm", {"hidden": 10**6}, "hidden or embedding_dim"),
    ("bilstm", {"vocab_size": "many", "pad_id": 0}, "vocab_size must be a whole number"),
    ("bilstm", {"vocab_size": 100, "pad_id": 100}, "pad_id 100 is not a token id"),
    ("text-cnn", {"widths": [10**6]}, "filter widths must be at most"),
    ("text-cnn", {"channels": 10**8}, "channels, widths or embedding_dim"),
])
def test_huge_text_models_are_refused(name, options, match):
    pytest.importorskip("transformers", reason="text models need kdistill[nlp]")
    options = {"vocab_size": 1000, "pad_id": 0, **options}
    with pytest.raises(ConfigError, match=match):
        create_model(name, (32,), 2, **options)


@pytest.mark.parametrize("config, match", [
    ({"hidden_size": 10**6, "num_attention_heads": 1}, "hidden_size"),
    ({"vocab_size": "lots"}, "vocab_size must be a positive whole number"),
    ({"num_hidden_layers": 10**5}, "num_hidden_layers must be at most"),
    ({"model_type": 7}, "model_type must be a string"),
])
def test_huge_or_malformed_encoder_configs_are_refused(config, match):
    pytest.importorskip("transformers", reason="text models need kdistill[nlp]")
    with pytest.raises(ConfigError, match=match):
        create_model("hf-classifier", (32,), 2, config={"model_type": "bert", **config})
    with pytest.raises(ConfigError, match="config must be a mapping"):
        create_model("hf-classifier", (32,), 2, config="bert")


def test_text_length_from_the_data_is_bounded():
    pytest.importorskip("transformers", reason="text models need kdistill[nlp]")
    with pytest.raises(ConfigError, match="reads token ids of shape"):
        create_model("bilstm", (10**9,), 2, vocab_size=100, pad_id=0)


def test_cli_refuses_a_huge_hidden_width(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {dataset: digits, limit_train: 64, limit_test: 32}\nstudent: {model: mlp-simple}\n"
                   f"train: {{epochs: 1}}\noutput_dir: '{tmp_path / 'out'}'\n")
    assert main(["train", str(cfg), "--role", "student", "--no-progress",
                 "--set", "student.options.hidden=[1000000000]"]) == 2
    err = capsys.readouterr().err
    assert "make hidden" in err and "Traceback" not in err
