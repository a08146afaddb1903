"""The fast training path against slower references.

* cached teacher outputs (logits and hooked features, on the device or in a
  memory-mapped file) give the same losses as running the teacher live;
* ``fit`` ends with the same parameters as a textbook DataLoader loop fed the
  same shuffle order;
* augmentation forces the live teacher; the linear LR scaling rule is applied.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdistill.config import OptimizerConfig, SchedulerConfig, TrainConfig, parse_config
from kdistill.data import DataSplits
from kdistill.distiller import Distiller, Supervised
from kdistill.errors import ConfigError
from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.models.mlp import MLP
from kdistill.train import fit

TOL = dict(rtol=1e-5, atol=1e-6)


class FeatureMatch(DistillationMethod):
    """A feature loss on the first hidden layer, to exercise cached teacher features."""

    student_layers = ("features.0",)
    teacher_layers = ("features.0",)

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        s, t = ctx.student_features["features.0"], ctx.teacher_features["features.0"]
        return {"feat": nn.functional.mse_loss(s, t)}


class LiveOnly(FeatureMatch):
    needs_live_teacher = True


def make_data(n: int = 192, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 64, 1, 6, 6, generator=g)
    y = (x.flatten(1)[:, :3].argmax(1) + (x.mean((1, 2, 3)) > 0).long() * 3) % 5
    return DataSplits("toy", x[:n], y[:n], x[n:], y[n:], 5, (1, 6, 6))


def make_pair(methods=(), seed: int = 0, **kw) -> Distiller:
    torch.manual_seed(seed)
    teacher = MLP(36, (24, 24), 5, dropout=0.5)  # dropout: the cache relies on the teacher's eval mode
    student = MLP(36, (24,), 5)
    return Distiller(teacher=teacher, student=student, alpha=0.7, temperature=3.0, methods=methods, **kw)


def train_cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=32, val_fraction=0.0, progress=False, device="cpu",
                optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9),
                scheduler=SchedulerConfig(name="constant"))
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("storage", ["device", "memmap"])
def test_cached_teacher_logits_and_features_give_the_same_losses(storage, tmp_path):
    data = make_data()
    # built twice from one seed: deepcopy would share the feature hooks' closures
    live, cached = make_pair([(FeatureMatch(), 0.5)]), make_pair([(FeatureMatch(), 0.5)])
    cached.cache_teacher(data.x_train, batch_size=50, storage=storage, directory=str(tmp_path / "c"))
    assert cached.teacher_cache is not None and cached.teacher_cache.storage == storage
    assert set(cached.teacher_cache.features) == {"features.0"}
    calls = []
    cached.teacher.register_forward_hook(lambda *_: calls.append(1))
    for idx in (torch.tensor([5, 0, 191, 17]), torch.randperm(192)[:32]):
        a = live(data.x_train[idx], data.y_train[idx], idx)
        b = cached(data.x_train[idx], data.y_train[idx], idx)
        assert set(a) == set(b) == {"student", "kd", "feat", "loss"}
        for name in a:
            torch.testing.assert_close(a[name], b[name], **TOL)
    assert not calls, "the cached distiller must not run the teacher"
    if storage == "memmap":
        assert (tmp_path / "c" / "logits.npy").is_file()


def test_method_that_needs_the_live_teacher_bypasses_the_cache():
    data = make_data()
    distiller = make_pair([(LiveOnly(), 1.0)])
    history = fit(distiller, data, train_cfg(epochs=1))
    assert distiller.teacher_cache is None
    assert history.epochs[0]["feat"] > 0


@pytest.mark.parametrize("features", [False, True], ids=["kd", "kd+features"])
def test_fit_with_cached_teacher_matches_live_teacher(features):
    data = make_data()

    def methods():
        return [(FeatureMatch(), 0.5)] if features else []

    cached, live = make_pair(methods()), make_pair(methods())
    h_cached = fit(cached, data, train_cfg(), cache_teacher=True)
    h_live = fit(live, data, train_cfg(), cache_teacher=False)
    assert cached.teacher_cache is not None and live.teacher_cache is None
    for a, b in zip(h_cached.epochs, h_live.epochs, strict=True):
        for key in ("loss", "kd", "student", *(["feat"] if features else [])):
            assert a[key] == pytest.approx(b[key], rel=1e-5)
    for p, q in zip(cached.student.parameters(), live.student.parameters(), strict=True):
        torch.testing.assert_close(p, q, **TOL)
    assert not torch.equal(cached.student.features[0][0].weight,
                           make_pair(methods()).student.features[0][0].weight), "training changed nothing"


def test_bf16_teacher_precision_runs_only_the_teacher_in_bf16_and_caches_the_same():
    data = make_data()
    idx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    x, y = data.x_train[idx], data.y_train[idx]
    fp32, live = make_pair(), make_pair(teacher_precision="bf16")
    cached = make_pair(teacher_precision="bf16")
    cached.cache_teacher(data.x_train)
    t_fp32, _ = fp32.teacher_outputs(x, None)
    t_bf16, _ = live.teacher_outputs(x, None)
    assert t_fp32.dtype == torch.float32 and t_bf16.dtype == torch.bfloat16
    assert not torch.equal(t_bf16.float(), t_fp32)
    torch.testing.assert_close(t_bf16.float(), t_fp32, rtol=0.05, atol=0.05)  # bf16 keeps ~3 digits
    assert live.student(x).dtype == torch.float32  # the student is left in the loop's precision
    a, b, c = live(x, y, idx), cached(x, y, idx), fp32(x, y, idx)
    for name in a:
        torch.testing.assert_close(a[name], b[name], **TOL)  # cache built under the same autocast
        torch.testing.assert_close(a[name], c[name], rtol=0.05, atol=0.02)
    with pytest.raises(ConfigError, match="teacher_precision"):
        make_pair(teacher_precision="fp8")
    cfg = parse_config({"distill": {"teacher_precision": "bf16"}})
    assert cfg.distill.teacher_precision == "bf16"


def reference_kd_loop(distiller: Distiller, data: DataSplits, cfg: TrainConfig) -> None:
    """How distillation is usually written: a DataLoader, the teacher run on every batch."""
    teacher, student = distiller.teacher.eval(), distiller.student.train()
    opt = torch.optim.SGD(student.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum)
    t, alpha = distiller.temperature, distiller.alpha
    for epoch in range(cfg.epochs):
        # the same shuffle order as fit(): one seeded permutation per epoch
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(data.x_train), generator=gen).tolist()
        loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=cfg.batch_size, sampler=order)
        for x, y in loader:
            with torch.no_grad():
                soft = torch.softmax(teacher(x) / t, dim=1)
            logits = student(x)
            kd = nn.functional.kl_div(torch.log_softmax(logits / t, dim=1), soft, reduction="batchmean")
            loss = (1 - alpha) * nn.functional.cross_entropy(logits, y) + alpha * t * t * kd
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_fast_loop_matches_a_textbook_dataloader_loop():
    data = make_data(200)  # 200 / 32: the last batch is partial
    fast, slow = make_pair(), make_pair()
    cfg = train_cfg(epochs=2, seed=3)
    fit(fast, data, cfg)  # cached teacher, on-device batches
    reference_kd_loop(slow, data, cfg)
    for (name, p), q in zip(fast.student.named_parameters(), slow.student.parameters(), strict=True):
        torch.testing.assert_close(p, q, **TOL, msg=lambda m, name=name: f"{name}: {m}")
    initial = make_pair().student
    assert not torch.allclose(fast.student.classifier.weight, initial.classifier.weight)


def test_augmentation_runs_the_teacher_live_and_says_so(caplog):
    data = make_data()
    distiller = make_pair()
    distiller.cache_teacher(data.x_train)  # a stale cache must not survive into an augmented run
    with caplog.at_level(logging.INFO, logger="kdistill"):
        fit(distiller, data, train_cfg(epochs=1), augment_jitter=1)
    assert distiller.teacher_cache is None
    assert "augmentation is on: the teacher runs live" in caplog.text


def test_linear_lr_scaling_and_cuda_only_options_on_cpu(caplog):
    cfg = train_cfg(epochs=1, batch_size=64, base_batch_size=16, cuda_graphs=True)
    assert cfg.scaled_lr() == pytest.approx(0.2)
    assert train_cfg().scaled_lr() == pytest.approx(0.05)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="kdistill"):
        history = fit(Supervised(MLP(36, (8,), 5)), make_data(), cfg)
    assert history.epochs[0]["lr"] == pytest.approx(0.2)
    assert "cuda_graphs needs a CUDA device; ignored" in caplog.text


def test_new_options_are_validated():
    cfg = parse_config({"train": {"base_batch_size": 256, "compile": True},
                        "distill": {"cache": "memmap"}})
    assert cfg.train.compile and cfg.distill.cache == "memmap"
    with pytest.raises(ConfigError, match="distill.cache"):
        parse_config({"distill": {"cache": "disk"}})
    with pytest.raises(ConfigError, match="compile"):
        parse_config({"train": {"compile": "maybe"}})
    with pytest.raises(ConfigError, match="base_batch_size"):
        parse_config({"train": {"base_batch_size": 0}})
    with pytest.raises(ConfigError, match="teacher cache"):
        fit(make_pair(), make_data(), train_cfg(epochs=1), cache_teacher="disk")
