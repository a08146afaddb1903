"""Config mistakes end in one ConfigError naming the fix, early and bounded: never a traceback,
never gigabytes of memory, never the whole input echoed back."""

import time
from pathlib import Path

import pytest

from kdistill.cli.main import main
from kdistill.config import apply_overrides, load_config, parse_config, parse_override, read_yaml
from kdistill.errors import ConfigError
from kdistill.safe_yaml import MAX_CONFIG_BYTES


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def billion_laughs(levels=9, leaf="name"):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"{leaf}: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_while_loading(tmp_path):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb") as info:
        read_yaml(write(tmp_path, billion_laughs()))
    assert time.perf_counter() - started < 5
    assert len(str(info.value)) < 600


def test_bomb_inside_a_value_is_refused_before_validation(tmp_path):
    # 9**6 "lol"s under data.options would validate, then be copied into every checkpoint
    text = billion_laughs(6, leaf="x").replace("x: *a5", "data: {dataset: digits, options: {x: *a5}}")
    with pytest.raises(ConfigError, match="alias bomb"):
        read_yaml(write(tmp_path, text))


def test_a_long_string_repeated_by_aliases_is_refused(tmp_path):
    text = f"a: &a '{'x' * 200_000}'\nb: [" + ", ".join(["*a"] * 100) + "]\n"
    with pytest.raises(ConfigError, match="alias bomb"):
        read_yaml(write(tmp_path, text))


def test_recursive_alias_and_deep_nesting(tmp_path):
    with pytest.raises(ConfigError, match="recursive"):
        read_yaml(write(tmp_path, "a: &a [1, *a]\n"))
    with pytest.raises(ConfigError, match="nests more than"):
        read_yaml(write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_oversized_and_endless_files_are_refused_early(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="at most 1,048,576 bytes"):
        read_yaml(path)
    if Path("/dev/zero").exists():
        with pytest.raises(ConfigError, match="is a character device, not a regular file"):
            read_yaml("/dev/zero")


@pytest.mark.parametrize("text, match", [
    ("train: {epochs: !!int x}\n", r"'x' at line 1, column 17 cannot be read as !!int"),
    ("train: {seed: !!float abc}\n", "cannot be read as !!float"),
    ("name: !!binary '@@@@'\n", r"refuses \(!!binary"),
    ("name: !!timestamp 2020-99-99\n", r"refuses \(!!timestamp"),
    ("name: !!timestamp 2020-01-01\n", r"refuses \(!!timestamp"),
    ("name: !!set {a, b}\n", r"refuses \(!!set"),
    ("name: !!omap [a: 1]\n", r"refuses \(!!omap"),
    ("name: !!python/name:os.system\n", "never construct objects"),
    ("train: {epochs: " + "9" * 5000 + "}\n", "cannot be read as !!int"),
    ("train: {epochs: 3}\ntrain: {epochs: 4}\n", "appears twice"),
    ("train: {epochs: [}\n", "not valid YAML"),
    ("name: !!bool maybe\n", r"'maybe' at line 1, column 7 cannot be read as !!bool"),
    ("name: \x07\n", "character YAML does not allow"),
])
def test_yaml_values_that_do_not_fit_their_tags(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(write(tmp_path, text))
    assert len(str(info.value)) < 500  # a line and column, and at most a short quote


def test_unquoted_dates_stay_strings(tmp_path):
    assert load_config(write(tmp_path, "name: 2024-01-31\n")).name == "2024-01-31"


def test_unreadable_config_files(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="is a folder"):
        read_yaml(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_yaml(binary)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="a part of its path is a file"):
        read_yaml(binary / "x.yaml")
    good = write(tmp_path, "name: x\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # chmod cannot refuse root, who runs CI; the error the OS would give is simulated
    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(ConfigError, match="permission denied"):
        read_yaml(good)


@pytest.mark.parametrize("override, match", [
    ("=3", "no key before '='"),
    (".=1", "empty part"),
    ("a..b=1", "empty part"),
    ("train.=1", "empty part"),
    ("train.epochs=[", r"Override 'train.epochs=\['.*not valid YAML.*Quote"),
    ("train.epochs=*x", "not valid YAML"),
    ("name=!!python/name:os.system", "refuses"),
    ("epochs 3", "KEY=VALUE"),
])
def test_bad_overrides_name_the_override(override, match):
    with pytest.raises(ConfigError, match=match):
        parse_override(override)


def test_override_into_a_value_that_is_not_a_section():
    with pytest.raises(ConfigError, match=r"'train' is 3 .* not a section") as info:
        apply_overrides({}, ["train=3", "train.epochs=2"])
    assert "--set 'train={epochs: VALUE}'" in str(info.value)
    # flags that take a path set it verbatim, without reading it as YAML
    assert apply_overrides({}, [(["output_dir"], "runs/#1: [x")]) == {"output_dir": "runs/#1: [x"}


def test_user_values_are_truncated_in_messages(tmp_path):
    huge = "y" * 100_000
    for data in ({"train": {"amp": huge}}, {"name": [huge] * 1000}, {huge: 1}, {"train": {huge: 1}},
                 {"student": {"model": huge}}):
        with pytest.raises(ConfigError) as info:
            cfg = parse_config(data)
            from kdistill.models import create_model

            create_model(cfg.student.model, (1, 8, 8), 10)
        assert len(str(info.value)) < 1200, data.keys()
    with pytest.raises(ConfigError) as info:
        parse_override("x" * 100_000)
    assert len(str(info.value)) < 300


def test_nul_characters_and_lone_surrogates_are_refused():
    for value in ("runs/\x00x", "\ud800"):
        with pytest.raises(ConfigError, match="NUL character or a lone surrogate"):
            parse_config({"output_dir": value})


@pytest.mark.parametrize("section, key, word, expected", [
    ("distill", "cache", "off", "off"),
    ("distill", "cache", "no", "off"),
    ("distill", "cache", "on", "auto"),
    ("distill", "cache", "yes", "auto"),
    ("train", "amp", "off", "off"),
    ("train", "amp", "no", "off"),
    ("train", "amp", "on", "auto"),
    ("train", "lr_scaling", "off", "none"),
    ("distill", "teacher_precision", "off", "same"),
    ("tune", "pruner", "off", "none"),
    ("tune", "pruner", "on", "median"),
])
def test_yaml_boolean_words_mean_the_documented_value(tmp_path, section, key, word, expected):
    cfg = load_config(write(tmp_path, f"{section}: {{{key}: {word}}}\n"))
    assert getattr(getattr(cfg, section), key) == expected


def test_scheduler_off_means_constant_and_booleans_elsewhere_get_a_hint(tmp_path):
    cfg = load_config(write(tmp_path, "train: {scheduler: {name: off}}\n"))
    assert cfg.train.scheduler.name == "constant"
    with pytest.raises(ConfigError, match="quote the value"):
        load_config(write(tmp_path, "name: yes\n"))
    with pytest.raises(ConfigError, match="quote the value"):
        load_config(write(tmp_path, "train: {lr_scaling: on}\n"))


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_spellings_accepted(device):
    assert parse_config({"train": {"device": device}}).train.device == device


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:-1", "cuda:0:1", "gpu", "cuda:01", "", "CPU", "cuda:"])
def test_device_spellings_refused_with_the_allowed_forms(device):
    with pytest.raises(ConfigError, match=r"auto, cpu, cuda, cuda:N .* or mps"):
        parse_config({"train": {"device": device}})


@pytest.mark.parametrize("data", [
    {"train": {"seed": -1}},
    {"train": {"seed": 2**32}},
    {"train": {"seed": 10**30}},
    {"teacher_train": {"seed": 2**63}},
    {"tune": {"seed": -5}},
    {"train": {"epochs": 10**9}},
    {"train": {"batch_size": 10**12}},
    {"train": {"base_batch_size": 10**12}},
    {"data": {"limit_train": 10**30}},
    {"train": {"optimizer": {"lr": float("inf")}}},
    {"distill": {"temperature": float("nan")}},
    {"train": {"scheduler": {"warmup_epochs": float("inf")}}},
    {"train": {"optimizer": {"lr": 1.0e308}}},
    {"train": {"optimizer": {"weight_decay": 1.0e300}}},
    {"train": {"grad_clip": 1.0e300}},
    {"student": {"model": "mlp-simple", "variational": {"init_log_sigma2": -1.0e308}}},
    {"student": {"model": "mlp-simple", "variational": {"kl_weight": 1.0e300}}},
])
def test_numbers_that_reach_torch_are_bounded(data):
    with pytest.raises(ConfigError):
        parse_config(data)


@pytest.mark.parametrize("override", ["train.optimizer.lr=1.0e+308", "train.optimizer.weight_decay=1.0e+300",
                                      "student.variational={init_log_sigma2: -1.0e+308}"])
def test_values_that_overflow_inside_torch_stop_before_training(tmp_path, capsys, override):
    # each of these ended in "value cannot be converted to type float without overflow" from torch
    good = write(tmp_path, f"data: {{dataset: digits, limit_train: 64, limit_test: 16}}\n"
                           f"student: {{model: mlp-simple}}\ntrain: {{optimizer: {{name: sgd}}, epochs: 1, "
                           f"progress: false}}\noutput_dir: {tmp_path / 'runs'}\n")
    assert main(["train", str(good), "--role", "student", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdistill: error: Invalid config") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, match", [
    ("train: {epochs: 1:00}\n", r"'train.epochs': .*valid integer.*'1:00'"),
    ("train: {epochs: true}\n", "'train.epochs': must be a number, not true"),
    ("train: {batch_size: yes}\n", "'train.batch_size': must be a number, not true"),
    ("train: {optimizer: {lr: off}}\n", "'train.optimizer.lr': must be a number, not false"),
    ("distill: {temperature: on}\n", "'distill.temperature': must be a number, not true"),
])
def test_yaml_1_1_numbers_are_not_read_silently(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_yaml_1_1_number_forms_read_as_written(tmp_path):
    # what a person (and YAML 1.2) reads: 010 is ten, not the octal 8; 1:00 is text, not 60
    assert load_config(write(tmp_path, "train: {seed: 010}\n")).train.seed == 10
    assert load_config(write(tmp_path, "name: 1:00\n")).name == "1:00"


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs named pipes")
def test_a_fifo_as_the_config_is_refused_without_blocking(tmp_path, capsys):
    import os

    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(ConfigError, match="is a named pipe"):
        read_yaml(fifo)
    assert main(["train", str(fifo)]) == 2
    assert "named pipe" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "CONFIG", "-o", ""], ["distill", "CONFIG", "--output-dir", " "],
                                     ["train", "CONFIG", "--data-dir", ""], ["export", "CKPT", "-o", ""],
                                     ["evaluate", ""], ["demo", "-o", ""]])
def test_empty_paths_on_the_command_line_are_refused(tmp_path, capsys, command):
    config = write(tmp_path, "student: {model: mlp-simple}\n")
    argv = [str(config) if a == "CONFIG" else str(tmp_path / "c.safetensors") if a == "CKPT" else a
            for a in command]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "the path is empty" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'output_dir': is empty"):
        parse_config({"output_dir": ""})


def test_largest_seed_is_accepted():
    assert parse_config({"train": {"seed": 2**32 - 1}}).train.seed == 2**32 - 1


def test_cli_prints_one_paragraph_and_exits_2(tmp_path, capsys):
    cfg = write(tmp_path, billion_laughs())
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdistill: error:") and err.count("\n") == 1 and "Traceback" not in err
    good = write(tmp_path, "student: {model: mlp-simple}\n", "good.yaml")
    for args in (["--set", "=3"], ["--set", "train.seed=99999999999999999999999"],
                 ["--set", "train.device=cuda:abc"], ["--set", "train=3", "--set", "train.epochs=2"]):
        assert main(["train", str(good), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kdistill: error:") and "Traceback" not in err, args


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_cli_on_dev_zero(capsys):
    assert main(["train", "/dev/zero"]) == 2
    assert "is a character device" in capsys.readouterr().err


def test_born_again_generations_are_bounded():
    from kdistill.schemes import validate_options

    with pytest.raises(ConfigError, match="less than or equal to 100"):
        validate_options("born-again", {"generations": 1_000_000_000})
    with pytest.raises(ConfigError, match="must be of type int .YAML reads unquoted"):
        validate_options("born-again", {"generations": True})
    assert validate_options("born-again", {"generations": 3}) == {"generations": 3}
