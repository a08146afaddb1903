"""A teacher cache of each sample's top-k logits: renormalised softmax, and its error measured."""

import logging
import math

import pytest
import torch
from torch import nn

from kdistill.config import DistillConfig, TrainConfig
from kdistill.data import DataSplits
from kdistill.distiller import Distiller
from kdistill.errors import ConfigError
from kdistill.teacher_cache import TeacherCache
from kdistill.train import fit


class Fixed(nn.Module):
    """A 'teacher' whose logits are a table row per sample (the input holds the row number)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x[:, 0].long()]


PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.05, 0.1, 0.8]])


@pytest.mark.parametrize("storage", ["device", "memmap"])
def test_the_top_k_softmax_is_the_full_one_renormalised_and_its_error_is_measured(storage, tmp_path):
    teacher = Fixed(PROBS.log())
    inputs = torch.arange(2.0)[:, None]
    cache = TeacherCache.build(teacher, inputs, top_k=2, storage=storage, directory=tmp_path / "c",
                               temperatures=(1.0, 2.0))
    assert cache.top_k == 2 and cache.num_classes == 4 and len(cache) == 2
    logits, _ = cache.lookup(torch.tensor([1, 0]))
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    expected = torch.tensor([[0, 0, 0.1 / 0.9, 0.8 / 0.9], [0.625, 0.375, 0, 0]])
    torch.testing.assert_close(torch.softmax(logits, -1), expected)
    # the kept mass S is 0.8 and 0.9: TV = 1 - S, KL(top-k || full) = -log S
    t1 = cache.truncation[1.0]
    assert t1["mean_tv"] == pytest.approx((0.2 + 0.1) / 2)
    assert t1["max_tv"] == pytest.approx(0.2)
    assert t1["mean_kl"] == pytest.approx((-math.log(0.8) - math.log(0.9)) / 2)
    # and at T = 2, against the softened full softmax computed directly
    soft = torch.softmax(PROBS.log().double() / 2, -1)
    kept = soft.topk(2, -1).values.sum(-1)
    assert cache.truncation[2.0]["mean_tv"] == pytest.approx(float((1 - kept).mean()))
    q = torch.softmax(logits.double() / 2, -1)[[1, 0]]  # back in sample order
    p = soft
    kl_direct = (q * (q.clamp_min(1e-300).log() - p.log())).sum(-1).mean()
    assert cache.truncation[2.0]["mean_kl"] == pytest.approx(float(kl_direct), rel=1e-6)


def test_a_top_k_cache_needs_more_classes_than_k():
    with pytest.raises(ConfigError, match="cache_top_k"):
        TeacherCache.build(Fixed(PROBS.log()), torch.arange(2.0)[:, None], top_k=4)
    with pytest.raises(ValueError):
        DistillConfig(cache_top_k=0)
    with pytest.raises(ConfigError, match="cache_top_k"):
        Distiller(teacher=nn.Identity(), student=nn.Identity(), cache_top_k=0)


def test_fit_distils_from_the_truncated_teacher_and_logs_its_error(caplog):
    torch.manual_seed(0)
    n, classes = 24, 10
    table = torch.randn(n, classes) * 3
    x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], torch.randn(n, 3)], 1)
    y = table.argmax(1)
    data = DataSplits("toy", x, y, x[:4], y[:4], classes, (4,))
    cfg = TrainConfig(epochs=1, batch_size=n, val_fraction=0.0, progress=False, device="cpu", amp="off",
                      optimizer={"name": "sgd", "lr": 0.1})

    def run(top_k):
        torch.manual_seed(1)
        student = nn.Linear(4, classes)
        start = nn.Linear(4, classes)
        start.load_state_dict(student.state_dict())
        distiller = Distiller(teacher=Fixed(table), student=student, alpha=1.0, temperature=2.0, cache_top_k=top_k)
        with caplog.at_level(logging.INFO, logger="kdistill"):
            history = fit(distiller, data, cfg, loader="memory")
        return history.epochs[0]["kd"], start, distiller

    kd_full, start, _ = run(None)
    kd_top3, _, distiller = run(3)
    assert distiller.teacher_cache.top_k == 3
    assert "top 3 of 10 logits" in caplog.text and "T=2: mean KL" in caplog.text
    # the kd term was computed against the teacher's softmax renormalised over its top 3 classes
    values, classes_kept = (table / 2).topk(3, -1)
    truncated = torch.zeros(n, classes).scatter_(-1, classes_kept, torch.softmax(values, -1))
    log_q = torch.log_softmax(start(x) / 2, -1)
    expected = 4 * nn.functional.kl_div(log_q, truncated, reduction="batchmean")
    assert kd_top3 == pytest.approx(expected.item(), rel=1e-4)
    assert kd_top3 != pytest.approx(kd_full, rel=1e-3)


def test_the_config_key_reaches_the_run(tmp_path, capsys):
    import yaml

    from kdistill.cli.main import main

    config = {"data": {"dataset": "digits", "limit_train": 120, "limit_test": 30},
              "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple", "options": {"hidden": [8]}},
              "teacher_train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
              "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}, "distill": {"cache_top_k": 3}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["-v", "distill", str(path), "--no-progress", "-o", str(tmp_path / "run")]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long log lines
    assert "keeps the top 3 of 10 logits per sample" in err and "mean KL(top-k || full)" in err
