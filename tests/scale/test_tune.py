"""Optuna search: a 3-trial study on digits, and resuming an interrupted one."""

import pytest
import yaml

pytest.importorskip("optuna")

from kdistill.config import parse_config  # noqa: E402
from kdistill.errors import ConfigError  # noqa: E402
from kdistill.experiment import load_data, train_model  # noqa: E402
from kdistill.tune import run_tune  # noqa: E402

BASE = {
    "name": "tune-test",
    "data": {"dataset": "digits", "limit_train": 240, "limit_test": 40},
    "teacher": {"model": "mlp-simple"},
    "student": {"model": "mlp-simple"},
    "train": {"epochs": 2, "batch_size": 64, "progress": False, "device": "cpu"},
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    # one teacher for every search in this module, through teacher.checkpoint
    data = load_data(parse_config(BASE))
    out = tmp_path_factory.mktemp("teacher")
    train_model(parse_config(BASE), "teacher", data=data, out_dir=out)
    BASE["teacher"] = {"model": "mlp-simple", "checkpoint": str(out / "best.safetensors")}
    return data


def test_three_trial_search_writes_best_config_and_plots(tmp_path, digits):
    cfg = parse_config(BASE)
    result = run_tune(cfg, 3, out_dir=tmp_path, data=digits)
    assert result.finished_trials == 3
    assert set(result.best_params) == {"distill.temperature", "distill.alpha", "train.optimizer.lr"}
    assert 1.0 <= result.best_params["distill.temperature"] <= 20.0
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["distill"]["temperature"] == result.best_params["distill.temperature"]
    assert best["train"]["optimizer"]["lr"] == result.best_params["train.optimizer.lr"]
    parse_config(best)  # the written config is valid as it stands
    assert (tmp_path / "tune.db").is_file()
    for plot in ("history.png", "importance.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the search space is overridable from the config, and bad keys are refused
    custom = parse_config(dict(BASE, tune={"search": {"distill.temperature": {"choices": [2.0]}}}))
    again = run_tune(custom, 1, out_dir=tmp_path / "custom", data=digits)
    assert again.best_params == {"distill.temperature": 2.0}
    with pytest.raises(ConfigError, match="distill.temprature"):
        run_tune(parse_config(dict(BASE, tune={"search": {"distill.temprature": {"low": 1, "high": 2}}})),
                 1, out_dir=tmp_path / "bad", data=digits)


def test_interrupted_search_resumes_from_its_storage(tmp_path, digits, monkeypatch):
    import kdistill.tune as tune

    cfg = parse_config(BASE)
    real_execute, calls = tune.execute, []

    def interrupted_execute(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second trial
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(tune, "execute", interrupted_execute)
    with pytest.raises(KeyboardInterrupt):
        run_tune(cfg, 3, out_dir=tmp_path, data=digits)
    monkeypatch.setattr(tune, "execute", real_execute)

    import optuna

    study = optuna.load_study(study_name="tune-test", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    first = study.trials[0].params

    result = run_tune(cfg, 3, out_dir=tmp_path, data=digits)
    assert result.finished_trials == 3
    states = [t.state.name for t in result.study.trials]
    assert states[:2] == ["COMPLETE", "FAIL"] and len(states) == 4  # two new trials, not three
    assert result.study.trials[0].params == first  # the earlier trial was kept
    # the resumed search draws new values, not the first trial's again
    assert result.study.trials[2].params != first and result.study.trials[3].params != first


def test_a_resumed_search_never_repeats_earlier_draws(tmp_path, digits):
    cfg = parse_config(BASE)
    run_tune(cfg, 2, out_dir=tmp_path, data=digits)
    result = run_tune(cfg, 4, out_dir=tmp_path, data=digits)
    drawn = [tuple(sorted(t.params.items())) for t in result.study.trials]
    assert len(drawn) == 4 and len(set(drawn)) == 4


OWN_TEACHER = {**BASE, "teacher": {"model": "mlp-simple"},
               "teacher_train": {"epochs": 3, "batch_size": 64, "progress": False, "device": "cpu"}}


def test_a_search_killed_while_its_teacher_trains_resumes_that_teacher(tmp_path, monkeypatch):
    import kdistill.train.checkpoint as checkpoint
    from kdistill.train import read_checkpoint

    class Killed(BaseException):
        pass

    real, writes = checkpoint.atomic_write_bytes, []

    def dying(path, payload):
        writes.append(path)
        real(path, payload)
        if len(writes) == 4:  # epoch 0's best and last (and their JSON copies) are on disk
            raise Killed

    cfg = parse_config(dict(OWN_TEACHER, output_dir=str(tmp_path)))
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", dying)
    with pytest.raises(Killed):
        run_tune(cfg, 2, out_dir=tmp_path / "tune")
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real)
    _, meta = read_checkpoint(tmp_path / "tune" / "teacher" / "last.safetensors")
    assert meta["epoch"] == 0  # half-trained: a search that reused it would distil from a 1-epoch teacher

    result = run_tune(cfg, 2, out_dir=tmp_path / "tune")
    _, meta = read_checkpoint(tmp_path / "tune" / "teacher" / "last.safetensors")
    assert [r["epoch"] for r in meta["history"]] == [0, 1, 2] and result.finished_trials == 2


def test_two_searches_on_one_folder_both_finish(tmp_path):
    import os
    import subprocess
    import sys

    import optuna

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(dict(OWN_TEACHER, output_dir=str(tmp_path / "out"))))
    command = [sys.executable, "-m", "kdistill", "tune", str(config), "--trials", "4",
               "--storage", f"sqlite:///{tmp_path / 'shared.db'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out + err
    study = optuna.load_study(study_name="tune-test", storage=f"sqlite:///{tmp_path / 'shared.db'}")
    assert len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]) >= 4
    from kdistill.train import read_checkpoint

    _, meta = read_checkpoint(tmp_path / "out" / "tune" / "teacher" / "last.safetensors")
    assert [r["epoch"] for r in meta["history"]] == [0, 1, 2]  # one teacher, trained once
    assert (tmp_path / "out" / "tune" / "best.yaml").is_file()
    assert not list((tmp_path / "out").rglob("*.tmp"))


@pytest.mark.parametrize("distill", [{"scheme": {"name": "born-again"}}, {"method": "born-again"}])
def test_a_scheme_is_refused_not_ignored(tmp_path, digits, distill):
    cfg = parse_config(dict(BASE, distill=distill))
    with pytest.raises(ConfigError, match="scheme 'born-again'"):
        run_tune(cfg, 1, out_dir=tmp_path, data=digits)
    assert not (tmp_path / "tune.db").exists()


def test_tracking_follows_every_trial(tmp_path, digits, caplog):
    pytest.importorskip("tensorboard")
    cfg = parse_config(dict(BASE, name="tracked", tracking={"tensorboard": True}))
    with caplog.at_level("WARNING", logger="kdistill"):
        run_tune(cfg, 2, out_dir=tmp_path, data=digits)
    runs = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert runs == ["tracked-trial-0", "tracked-trial-1"]
    assert all(list((tmp_path / "tensorboard" / run).glob("events.out.tfevents.*")) for run in runs)
    assert "every trial is tracked as its own run" in caplog.text


def test_a_trial_failing_with_a_user_error_prints_one_paragraph_and_no_traceback(tmp_path, digits, monkeypatch,
                                                                                  capsys):
    import io
    import logging

    import optuna

    from kdistill.cli.main import main

    # Optuna logs through its own handler, on the stream that was stderr when it was imported: read it here
    class Kept(io.StringIO):
        def close(self):  # logging shuts handlers down at the end of a command: keep what was written
            pass

    optuna_log = Kept()
    optuna.logging.get_verbosity()  # makes sure Optuna's handler exists
    handlers = [h for h in logging.getLogger("optuna").handlers if isinstance(h, logging.StreamHandler)]
    assert handlers
    for handler in handlers:
        monkeypatch.setattr(handler, "stream", optuna_log)
    # every trial's student names a model that does not exist: the first trial fails with a ConfigError
    search = {"student.model": {"choices": ["no-such-net"]}}
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(dict(BASE, output_dir=str(tmp_path / "runs"), tune={"search": search})))
    assert main(["tune", str(config), "--trials", "2"]) == 2
    err = capsys.readouterr().err + optuna_log.getvalue()
    assert "Traceback" not in err and "failed with" not in err, err
    assert err.startswith("kdistill: error: Unknown model 'no-such-net'") and err.count("\n") == 1
