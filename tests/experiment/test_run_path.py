"""One path from a config to a run: every caller builds its run with build_run, and gets the same run."""

from __future__ import annotations

import pytest
import torch

import kdistill.experiment.run as run_module
from kdistill.config import parse_config
from kdistill.errors import ConfigError
from kdistill.experiment import build_run, execute, run_distill, train_model
from kdistill.schemes import run_experiment

TINY = {"data": {"dataset": "digits", "limit_train": 160, "limit_test": 40},
        "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple", "options": {"hidden": [8]}},
        "teacher_train": {"epochs": 1, "batch_size": 64, "progress": False, "device": "cpu"},
        "train": {"epochs": 1, "batch_size": 64, "progress": False, "device": "cpu"}}


def cfg_of(**sections):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


@pytest.fixture
def spy(monkeypatch):
    """Record every run built, whoever builds it."""
    built = []
    real = run_module.build_run

    def recording(*args, **kwargs):
        run = real(*args, **kwargs)
        built.append(run)
        return run

    for module in ("kdistill.experiment.run", "kdistill.experiment.execution", "kdistill.experiment",
                   "kdistill.tune", "kdistill.schemes.dml"):
        monkeypatch.setattr(f"{module}.build_run", recording, raising=False)
    return built


def test_train_distill_dml_and_tune_all_build_their_runs_with_build_run(spy, tmp_path):
    cfg = cfg_of(output_dir=str(tmp_path / "a"), data={"augment": {"jitter": 1}}, distill={"cache": "off"})
    train_model(cfg, "student")
    run_distill(cfg)
    run_experiment(cfg_of(output_dir=str(tmp_path / "b"), distill={"scheme": {"name": "dml"}}))
    pytest.importorskip("optuna")
    from kdistill.tune import run_tune

    run_tune(cfg_of(output_dir=str(tmp_path / "c"), data={"augment": {"jitter": 1}}, distill={"cache": "off"}),
             1, out_dir=tmp_path / "c")
    kinds = [r.kind for r in spy]
    assert kinds.count("distill") >= 2 and "teacher" in kinds and "student" in kinds
    tune_run = spy[-1]
    # the trial run carries what `kdistill distill` would use (today's tune dropped both)
    assert tune_run.augment.jitter == 1 and tune_run.cache == "off" and tune_run.out_dir is None


def test_tune_handles_a_regression_config(tmp_path):
    pytest.importorskip("optuna")
    from kdistill.tune import run_tune

    cfg = cfg_of(data={"dataset": "diabetes", "limit_train": None, "limit_test": None},
                 output_dir=str(tmp_path))
    result = run_tune(cfg, 2, out_dir=tmp_path / "tune")
    assert result.finished_trials == 2 and result.best_config_path.exists()


def test_dml_peers_are_seeded_like_the_student(tmp_path):
    def weights(folder):
        run_experiment(cfg_of(output_dir=str(folder), distill={"scheme": {"name": "dml"}},
                              train={"seed": 3}))
        from kdistill.train import read_checkpoint

        return read_checkpoint(folder / "student" / "last.safetensors")[0]

    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert any(k.startswith("peers.") for k in a)
    for key in a:
        if key.startswith(("model.", "peers.")):
            torch.testing.assert_close(a[key], b[key])


def test_method_and_methods_together_are_refused():
    with pytest.raises(ConfigError, match="two ways"):
        cfg_of(distill={"method": "dkd", "methods": [{"name": "crd"}]})


def test_kd_entry_with_weight_or_options_is_refused_not_dropped():
    with pytest.raises(ConfigError, match="built-in soft-target term"):
        cfg_of(distill={"methods": [{"name": "kd", "weight": 0.3}]})
    with pytest.raises(ConfigError, match="built-in soft-target term"):
        cfg_of(distill={"methods": [{"name": "kd", "options": {"temperature": 2}}]})
    assert cfg_of(distill={"methods": [{"name": "kd"}, {"name": "pkt"}]}).distill.method_list()[0].name == "pkt"


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.query(x) + self.key(x)


class _Attentive(torch.nn.Module):
    """Query/key projections by module path, but no attribute saying how many heads they have."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Block()])
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.blocks[0](x).mean(1))


def test_method_setup_mistakes_are_config_errors():
    from kdistill.distiller import Distiller, build_method

    method = build_method("attention-maps", {"layers": {"teacher": [0], "student": [0]},
                                              "teacher_path": "blocks.{i}", "student_path": "blocks.{i}"}, 4.0)
    distiller = Distiller(teacher=_Attentive(), student=_Attentive(), methods=[(method, 1.0)])
    with pytest.raises(ConfigError, match="Method 'attention-maps'.*number of heads"):
        distiller.setup_methods(torch.zeros(2, 5, 4), 10)


def test_a_student_typo_is_reported_before_the_teacher_trains(tmp_path):
    cfg = cfg_of(output_dir=str(tmp_path), student={"model": "mlp-simpel"})
    with pytest.raises(ConfigError, match="Did you mean 'mlp-simple'"):
        run_experiment(cfg)
    assert not (tmp_path / "teacher").exists()


@pytest.mark.parametrize("scheme, options, message", [
    ("multi-teacher", {"teachers": ["mlp-simple", "cnn-smple"]}, "cnn-simple"),
    ("takd", {"assistants": [{"model": "mlp-simple", "options": {"hiden": [4]}}]}, "hidden"),
    ("dml", {"peers": ["resnet-tiny"]}, "Unknown model"),
    ("multi-teacher", {"teachers": [{"checkpoint": "nowhere.safetensors"}]}, "model"),
])
def test_scheme_members_are_checked_before_any_training(tmp_path, scheme, options, message):
    cfg = cfg_of(output_dir=str(tmp_path), distill={"scheme": {"name": scheme, "options": options}})
    with pytest.raises(ConfigError, match=message):
        run_experiment(cfg)
    assert not any(tmp_path.rglob("*.safetensors"))


def test_method_layer_typos_are_found_before_training(tmp_path):
    cfg = cfg_of(output_dir=str(tmp_path),
                 distill={"methods": [{"name": "fitnets", "options": {"student_layer": "featurs"}}]})
    with pytest.raises(ConfigError, match="no module 'featurs'"):
        run_experiment(cfg)
    assert not (tmp_path / "teacher").exists()


def test_fitnets_hint_stage_longer_than_the_run_is_refused(tmp_path):
    cfg = cfg_of(output_dir=str(tmp_path), train={"epochs": 3},
                 distill={"methods": [{"name": "fitnets", "options": {"stage1_epochs": 3}}]})
    with pytest.raises(ConfigError, match="stage1_epochs is 3 but the student trains 3 epochs"):
        run_experiment(cfg)


def test_student_checkpoint_is_refused_instead_of_ignored(tmp_path):
    with pytest.raises(ConfigError, match="student.checkpoint is not read"):
        run_experiment(cfg_of(output_dir=str(tmp_path), student={"checkpoint": "x.safetensors"}))


def test_build_run_without_output_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of()
    run = build_run(cfg, "student", out_dir=None)
    result = execute(run)
    assert result.checkpoint is None and list(tmp_path.iterdir()) == []
    assert 0 <= result.metrics["accuracy"] <= 1


def test_a_finished_teacher_from_an_older_record_is_still_reused(tmp_path):
    """A setting added to the config since the teacher was saved counts at its default, not as a change."""
    from kdistill.config import ModelConfig, TrainConfig
    from kdistill.experiment.teachers import _same_settings

    current = ModelConfig(model="cnn-medium").model_dump(mode="json")
    older = {k: v for k, v in current.items() if k != "variational"}
    assert _same_settings(older, current, ModelConfig)
    assert not _same_settings({**older, "model": "cnn-deep"}, current, ModelConfig)
    train = TrainConfig().model_dump(mode="json")
    assert _same_settings({k: v for k, v in train.items() if k != "label_smoothing"}, train, TrainConfig)
    changed = TrainConfig(label_smoothing=0.1).model_dump(mode="json")
    assert not _same_settings({k: v for k, v in train.items() if k != "label_smoothing"}, changed, TrainConfig)
    assert not _same_settings(None, current, ModelConfig)
