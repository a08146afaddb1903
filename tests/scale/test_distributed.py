"""Data-parallel training: sharding maths, and 2 gloo processes matching one process."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kdistill.config import TrainConfig
from kdistill.train import distributed, read_checkpoint
from kdistill.train.distributed import DistContext


@pytest.mark.parametrize("n_global", [50, 41, 3, 1])
def test_shards_cover_the_batch_and_weights_restore_the_global_mean(n_global):
    world = 4
    x = torch.arange(n_global, dtype=torch.float32)
    pieces, weighted = [], 0.0
    for rank in range(world):
        xb, yb, idx, w = distributed.shard_batch(x, x, x.long(), DistContext(rank, world))
        assert len(xb) >= 1  # every rank joins the gradient all-reduce
        if w:
            pieces.append(xb)
        # DDP averages rank losses: mean_r(w_r * mean(x_r)) must be the global mean
        weighted += w * xb.mean().item() / world
    assert torch.equal(torch.cat(pieces), x)
    assert weighted == pytest.approx(x.mean().item())


def test_single_process_is_untouched():
    x = torch.ones(5, 2)
    xb, _, _, w = distributed.shard_batch(x, x, x, DistContext())
    assert xb is x and w == 1.0
    cfg = TrainConfig(batch_size=32, lr_scaling="linear", batch_scope="per_rank")
    assert distributed.effective_config(cfg, DistContext()) is cfg


def test_lr_scaling_and_per_rank_batches():
    cfg = TrainConfig.model_validate({"batch_size": 32, "optimizer": {"lr": 0.1},
                                      "batch_scope": "per_rank", "lr_scaling": "sqrt"})
    eff = distributed.effective_config(cfg, DistContext(1, 4))
    assert eff.batch_size == 128 and eff.optimizer.lr == pytest.approx(0.2)
    linear = cfg.model_copy(update={"lr_scaling": "linear", "batch_scope": "global"})
    eff = distributed.effective_config(linear, DistContext(0, 4))
    assert eff.batch_size == 32 and eff.optimizer.lr == pytest.approx(0.4)
    assert cfg.batch_size == 32 and cfg.optimizer.lr == 0.1  # the user's config is not mutated


def test_torchrun_two_gloo_processes_match_one_process(tmp_path):
    # batch 41 over 2 ranks splits unevenly (20/21) and the last batch is short
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data: {dataset: digits, limit_train: 200, limit_test: 40}\n"
        "teacher: {model: mlp-simple}\nstudent: {model: mlp-simple}\n"
        "distill: {alpha: 0.7, temperature: 3}\n"
        "train: {epochs: 2, batch_size: 41, progress: false, device: cpu,"
        " optimizer: {name: adam, lr: 0.003}}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "kdistill", "distill", str(cfg), "-o",
                             str(tmp_path / "one")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert single.returncode == 0, single.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "kdistill", "distill", str(cfg), "-o",
                          str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("best checkpoint:") == 1  # only rank 0 reports
    for role in ("teacher", "student"):
        one_ckpt = tmp_path / "one" / role / "last.safetensors"
        two_ckpt = tmp_path / "two" / role / "last.safetensors"
        assert '"world_size": 2' in two_ckpt.with_suffix(".json").read_text()
        a, b = load_file(one_ckpt), load_file(two_ckpt)
        names = [k for k in a if k.startswith("model.")]
        assert names
        for name in names:
            torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)
    assert not list((tmp_path / "two").rglob("*.tmp"))


def test_torchrun_with_a_trainable_adapter_saves_unwrapped_names_and_resumes(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data: {dataset: digits, limit_train: 160, limit_test: 40}\n"
        "teacher: {model: mlp-simple}\nstudent: {model: mlp-simple, options: {hidden: [8]}}\n"
        "distill: {methods: [{name: fitnets}]}\n"
        "teacher_train: {epochs: 1, progress: false, device: cpu}\n"
        "train: {epochs: 2, batch_size: 32, progress: false, device: cpu}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "kdistill", "distill", str(cfg), "-o", str(tmp_path / "run")]
    first = subprocess.run(torchrun, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    last = tmp_path / "run" / "student" / "last.safetensors"
    names = list(load_file(last))
    assert any(n.startswith("methods.0.regressor.") for n in names)
    assert not [n for n in names if ".module." in n or n.startswith("module.")]
    resumed = subprocess.run(torchrun + ["--resume", str(last), "--epochs", "3"], capture_output=True,
                             text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    from kdistill.train import read_checkpoint

    _, meta = read_checkpoint(last)
    assert meta["epoch"] == 2 and [r["epoch"] for r in meta["history"]] == [0, 1, 2]


def test_torchrun_with_sync_batchnorm_follows_one_process(tmp_path):
    # cnn-simple has BatchNorm2d layers: with train.sync_batchnorm every rank normalises with the
    # global batch's statistics, as the single process does; lr_scaling: linear is recorded as configured
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data: {dataset: digits, limit_train: 160, limit_test: 40}\n"
        "student: {model: cnn-simple}\n"
        "train: {epochs: 2, batch_size: 40, progress: false, device: cpu, sync_batchnorm: true,"
        " optimizer: {name: sgd, lr: 0.05}}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = ["-m", "kdistill", "train", str(cfg), "--role", "student", "-o"]
    single = subprocess.run([sys.executable, *command, str(tmp_path / "one")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *command, str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "train.sync_batchnorm" in " ".join(two.stderr.split())
    a = load_file(tmp_path / "one" / "student" / "last.safetensors")
    b = load_file(tmp_path / "two" / "student" / "last.safetensors")
    running = [k for k in a if k.endswith("running_var")]
    assert running and all(k in b for k in a)
    for name in a:
        if a[name].is_floating_point():
            torch.testing.assert_close(b[name], a[name], atol=1e-4, rtol=1e-3)


def test_scaled_lr_is_used_but_the_configured_lr_is_recorded(tmp_path, monkeypatch):
    # under torchrun with lr_scaling the optimiser runs at the scaled lr; the checkpoint records the
    # config's lr, so that the same config run again finds its teacher finished instead of "different"
    from kdistill.config import ExperimentConfig
    from kdistill.experiment import load_data, run_distill
    from kdistill.experiment.teachers import teacher_state
    from kdistill.train import loop

    def as_two_processes(cfg, ctx):
        return cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"lr": cfg.optimizer.lr * 2})})

    monkeypatch.setattr(loop.distributed, "effective_config", as_two_processes)
    cfg = ExperimentConfig.model_validate({
        "data": {"dataset": "digits", "limit_train": 100, "limit_test": 20},
        "teacher": {"model": "mlp-simple", "options": {"hidden": [8]}},
        "student": {"model": "mlp-simple", "options": {"hidden": [8]}},
        "train": {"epochs": 1, "progress": False, "device": "cpu", "lr_scaling": "linear",
                  "optimizer": {"name": "sgd", "lr": 0.01}, "scheduler": {"name": "constant"}}})
    result = run_distill(cfg, out_dir=tmp_path)
    assert result.history[0]["lr"] == pytest.approx(0.02)  # the scaled lr trained
    _, meta = read_checkpoint(tmp_path / "teacher" / "last.safetensors")
    assert meta["train"]["optimizer"]["lr"] == 0.01  # the configured lr is recorded
    assert teacher_state(cfg, load_data(cfg), tmp_path / "teacher") == "finished"


# A gloo process group whose threads outlive destroy_process_group() is destroyed during interpreter
# shutdown instead, which aborted one run in several with SIGABRT after the work had succeeded.
_TEARDOWN_SCRIPT = """
import os, sys, torch, torch.distributed as dist
from torch import nn
def gloo_threads():
    return [t for t in os.listdir("/proc/self/task") if "gloo" in open(f"/proc/self/task/{t}/comm").read()]
if sys.argv[2] == "before":
    from kdistill.train import distributed
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
if sys.argv[2] == "after":
    import torch.distributed.nn  # binds the live group as a default argument
    from kdistill.train import distributed
objective = nn.Module()
objective.student = nn.Linear(3, 2)
# wrap_trainable only asks whether the job is distributed; one gloo process is enough for DDP's state
unwrap = distributed.wrap_trainable(objective, distributed.DistContext(0, 2), torch.device("cpu"))
objective.student(torch.randn(4, 3)).sum().backward()
unwrap()
assert gloo_threads(), "no gloo threads while the group is live: this check sees nothing"
dist.destroy_process_group()
assert not gloo_threads(), "gloo threads survive destroy_process_group()"
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread names from /proc")
@pytest.mark.parametrize("kdistill_imported", ["before", "after"])
def test_destroying_the_process_group_after_ddp_stops_gloo_threads(tmp_path, kdistill_imported):
    # "after": a script that set up its own group and imported torch.distributed.nn before kdistill
    run = subprocess.run([sys.executable, "-c", _TEARDOWN_SCRIPT, str(tmp_path / "init"), kdistill_imported],
                         capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert run.returncode == 0, run.stderr
