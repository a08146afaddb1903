"""User code from the command line: --plugin files and modules, kdistill.plugins entry points,
checkpoints of plugin models through evaluate and export, and the README's "Bring your own model"."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from helpers import err_text
from helpers import write_config as write_config_from

from kdistill.cli import plugins
from kdistill.cli.main import main
from kdistill.registry import METHODS, MODELS
from kdistill.train import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
MY_MODEL = ROOT / "examples" / "plugins" / "my_model.py"

CONFIG = {
    "name": "plugin",
    "data": {"dataset": "digits", "limit_train": 160, "limit_test": 40},
    "teacher": {"model": "mlp-simple"},
    "student": {"model": "my-mlp", "options": {"hidden": 12}},
    "teacher_train": {"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu", "progress": False},
    "train": {"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu", "progress": False},
}


def write_config(folder, **changes):
    return write_config_from(folder, CONFIG, **changes)


# a user's loss term: the reverse (mode-seeking) KL from student to teacher
METHOD_PLUGIN = '''
import torch
from kdistill import register_method
from kdistill.methods.base import DistillationMethod


@register_method("test-reverse-kl")
class ReverseKL(DistillationMethod):
    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, ctx):
        t = self.temperature
        log_s = torch.log_softmax(ctx.student_logits / t, dim=-1)
        log_t = torch.log_softmax(ctx.teacher_logits / t, dim=-1)
        return {"reverse_kl": (log_s.exp() * (log_s - log_t)).sum(-1).mean() * t * t}
'''


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    """Each test starts with no plugin loaded and leaves the registries as it found them."""
    plugins.load_builtins()  # before the snapshot: restoring it must not drop kdistill's own entries
    for registry in (MODELS, METHODS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_plugins", dict(registry._plugins))
    monkeypatch.setattr(plugins, "_LOADED", {})
    yield
    for name in [n for n in sys.modules if n.startswith(("kdistill_plugin_", "fake_kd_plugin", "my_nets_pkg"))]:
        del sys.modules[name]




def test_a_plugin_model_through_train_distill_evaluate_and_export(tmp_path, capsys):
    cfg, out = write_config(tmp_path), tmp_path / "run"
    assert main(["train", str(cfg), "-o", str(out), "--plugin", str(MY_MODEL)]) == 0
    assert main(["distill", str(cfg), "-o", str(out), "--plugin", str(MY_MODEL)]) == 0
    student = out / "student" / "best.safetensors"
    spec = read_checkpoint(student)[1]["model_spec"]
    assert (spec["model"], spec["options"], spec["plugin"]) == ("my-mlp", {"hidden": 12}, str(MY_MODEL))
    capsys.readouterr()
    assert main(["evaluate", str(student), "--json", "--teacher", str(out / "teacher" / "best.safetensors"),
                 "--plugin", str(MY_MODEL)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_test"] > 0 and 0 <= metrics["agreement"] <= 1
    assert main(["export", str(student), "--format", "onnx", "-o", str(tmp_path / "s.onnx"),
                 "--plugin", str(MY_MODEL)]) == 0
    assert (tmp_path / "s.onnx").stat().st_size > 0

    # the same checkpoint without the plugin: the message names the one to pass
    del MODELS._entries["my-mlp"]
    plugins._LOADED.clear()
    capsys.readouterr()
    assert main(["evaluate", str(student)]) == 2
    assert f"registered by plugin '{MY_MODEL}', which is not loaded: pass --plugin {MY_MODEL}" in err_text(capsys)
    assert main(["export", str(student), "--format", "safetensors", "-o", str(tmp_path / "s.safetensors")]) == 2
    assert f"pass --plugin {MY_MODEL}" in err_text(capsys)
    # and as the teacher of another run
    cfg = write_config(tmp_path, teacher=None, student={"model": "mlp-simple"})
    assert main(["distill", str(cfg), "-o", str(tmp_path / "again"), "--teacher", str(student)]) == 2
    assert f"pass --plugin {MY_MODEL}" in err_text(capsys)


def test_a_config_naming_an_unregistered_model_suggests_a_plugin(tmp_path, capsys):
    assert main(["train", str(write_config(tmp_path)), "--role", "student", "-o", str(tmp_path / "x")]) == 2
    assert "Unknown model 'my-mlp'" in (err := err_text(capsys)) and "pass --plugin MODULE_OR_FILE.py" in err


def test_a_method_plugin_from_the_command_line(tmp_path):
    method = tmp_path / "reverse_kl.py"
    method.write_text(METHOD_PLUGIN)
    cfg, out = write_config(tmp_path, student={"model": "mlp-simple", "options": {"hidden": [8]}}), tmp_path / "run"
    assert main(["distill", str(cfg), "-o", str(out), "--plugin", str(method), "--method", "test-reverse-kl",
                 "--set", "distill.alpha=0.5"]) == 0
    meta = read_checkpoint(out / "student" / "last.safetensors")[1]
    assert meta["distill"]["method"] == "test-reverse-kl"
    assert all(record["reverse_kl"] >= 0 for record in meta["history"])  # the user's term was trained on
    assert METHODS.plugin_of("test-reverse-kl") == str(method)


def test_a_plugin_by_module_name_and_twice_is_loaded_once(tmp_path, monkeypatch):
    package = tmp_path / "my_nets_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(MY_MODEL.read_text().replace('"my-mlp"', '"pkg-mlp"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = write_config(tmp_path, student={"model": "pkg-mlp"})
    assert main(["train", str(cfg), "--role", "student", "-o", str(tmp_path / "run"),
                 "--plugin", "my_nets_pkg.nets", "--plugin", "my_nets_pkg.nets"]) == 0
    assert MODELS.plugin_of("pkg-mlp") == "my_nets_pkg.nets"
    assert read_checkpoint(tmp_path / "run" / "student" / "best.safetensors")[1]["model_spec"]["plugin"] == \
        "my_nets_pkg.nets"


@pytest.mark.parametrize(("source", "fragments"), [
    (None, ["does not exist"]),
    ("folder", ["is a folder"]),
    ("x = 1 +\n", ["has a syntax error (line 1)"]),
    ("import kdistill\n\nraise RuntimeError('the GPU driver is missing')\n",
     ["failed while importing", "line 3", "RuntimeError: the GPU driver is missing"]),
    ("from kdistill import register_model\n\nregister_model('mlp-simple')(lambda *a: None)\n",
     ["failed while importing", "ValueError: model 'mlp-simple' is already registered"]),
    ("import not_a_module_anywhere_kd\n", ["failed while importing", "No module named 'not_a_module_anywhere_kd'"]),
])
def test_a_plugin_that_cannot_be_loaded_is_a_clear_error(tmp_path, capsys, source, fragments):
    plugin = tmp_path / "bad_plugin.py"
    if source == "folder":
        plugin.mkdir()
    elif source is not None:
        plugin.write_text(source)
    assert main(["evaluate", str(tmp_path / "none.safetensors"), "--plugin", str(plugin)]) == 2
    err = err_text(capsys)
    assert err.startswith(f"kdistill: error: Plugin '{plugin}'") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    assert "kdistill_plugin_bad_plugin" not in sys.modules  # a failed plugin leaves no half module


def test_a_missing_module_plugin_says_how_to_provide_it(capsys):
    assert main(["evaluate", "none.safetensors", "--plugin", "no_such_pkg_kd.nets"]) == 2
    err = err_text(capsys)
    assert "no module named 'no_such_pkg_kd'" in err and "--plugin ./nets.py" in err


def fake_distribution(folder: Path, module_source: str) -> None:
    """An installed distribution on sys.path whose kdistill.plugins entry point is ``fake_kd_plugin``."""
    info = folder / "fake_kd_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-kd-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kdistill.plugins]\nfake-nets = fake_kd_plugin\n")
    (folder / "fake_kd_plugin.py").write_text(module_source)


def test_entry_point_plugins_load_on_every_command(tmp_path, monkeypatch, capsys):
    fake_distribution(tmp_path / "site", MY_MODEL.read_text().replace('"my-mlp"', '"ep-mlp"'))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    cfg = write_config(tmp_path, student={"model": "ep-mlp"})
    assert main(["train", str(cfg), "--role", "student", "-o", str(tmp_path / "run")]) == 0
    assert MODELS.plugin_of("ep-mlp") == "fake_kd_plugin"


def test_a_broken_entry_point_plugin_names_its_package(tmp_path, monkeypatch, capsys):
    fake_distribution(tmp_path / "site", "raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert main(["evaluate", "none.safetensors"]) == 2
    err = err_text(capsys)
    assert "Installed plugin 'fake-nets'" in err and "from fake-kd-plugin 1.0" in err
    assert "ImportError: needs libfoo" in err and "pip uninstall fake-kd-plugin" in err


def readme_commands(section: str) -> list[str]:
    """The ``kdistill`` lines of the first bash block under the README heading ``section``."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("kdistill ")]


def test_the_readme_bring_your_own_model_commands_run(tmp_path, monkeypatch, capsys):
    commands = readme_commands("Bring your own model")
    assert [shlex.split(c)[1] for c in commands] == ["train", "distill", "evaluate", "export"]
    shutil.copytree(ROOT / "examples" / "plugins", tmp_path / "examples" / "plugins")
    monkeypatch.chdir(tmp_path)
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, (command, capsys.readouterr().err)
    student = read_checkpoint(tmp_path / "runs" / "my-model" / "student" / "best.safetensors")[1]
    assert student["model_spec"]["model"] == "my-mlp"
    assert list((tmp_path / "runs" / "my-model" / "student").glob("*.onnx"))


REVERSE_KL = ROOT / "examples" / "plugins" / "reverse_kl.py"


def test_the_reverse_kl_example_from_the_command_line(tmp_path, capsys):
    """docs/METHODS.md's example file, named in distill.terms, trains from the CLI and is evaluated."""
    terms = [{"name": "ce", "weight": 0.5}, {"name": "reverse-kl", "weight": 0.5, "options": {"temperature": 2.0}}]
    cfg = write_config(tmp_path, student={"model": "mlp-simple", "options": {"hidden": [8]}},
                       distill={"terms": terms})
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["distill", str(cfg), "-o", str(out), "--plugin", str(REVERSE_KL)]) == 0
    assert "loss: 0.5 * ce + 0.5 * reverse-kl(temperature=2.0)" in capsys.readouterr().err
    meta = read_checkpoint(out / "student" / "best.safetensors")[1]
    assert [(t["name"], t["weight"]) for t in meta["loss_terms"]] == [("ce", 0.5), ("reverse-kl", 0.5)]
    assert all(record["reverse_kl"] >= 0 for record in meta["history"])  # the term was trained on
    assert METHODS.plugin_of("reverse-kl") == str(REVERSE_KL)
    assert main(["evaluate", str(out / "student" / "best.safetensors"), "--json",
                 "--teacher", str(out / "teacher" / "best.safetensors")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_test"] > 0 and 0 <= metrics["agreement"] <= 1
