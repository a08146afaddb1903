import pytest

from kdistill.config import load_config, parse_config
from kdistill.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_valid_config_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "student: {model: cnn-simple}\ntrain: {epochs: 3}\n"))
    assert cfg.train.epochs == 3
    assert cfg.data.dataset == "digits"
    assert cfg.distill.alpha == 0.9


def test_misspelled_key_names_the_key_and_allowed_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "train: {epocs: 3}\n"))
    message = str(info.value)
    assert "train.epocs" in message and "epochs" in message and "batch_size" in message


def test_bad_value_lists_allowed_values():
    with pytest.raises(ConfigError, match="allowed values: 'sgd', 'adam' or 'adamw'"):
        parse_config({"train": {"optimizer": {"name": "adm"}}})


def test_overrides_are_applied_and_validated(tmp_path):
    path = write(tmp_path, "train: {epochs: 3}\n")
    assert load_config(path, ["train.epochs=7", "distill.temperature=2.5"]).distill.temperature == 2.5
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(path, ["train.epochs=-1"])


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="refuses"):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_method_shorthand():
    cfg = parse_config({"distill": {"method": "kd"}})
    assert cfg.distill.method_list() == []
    cfg = parse_config({"distill": {"methods": [{"name": "kd"}, {"name": "crd", "weight": 0.8}]}})
    assert [m.name for m in cfg.distill.method_list()] == ["crd"]
