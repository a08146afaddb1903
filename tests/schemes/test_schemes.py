"""Training schemes: the math of their parts, and option validation."""

import math

import pytest
import torch
from helpers import Fixed
from torch import nn

from kdistill.config import parse_config
from kdistill.errors import ConfigError
from kdistill.schemes import run_scheme, scheme_names, validate_options
from kdistill.schemes.dml import MutualLearning
from kdistill.schemes.multi_teacher import TeacherEnsemble
from kdistill.schemes.noisy_student import add_input_noise
from kdistill.schemes.transfer import munge


def test_all_schemes_are_registered():
    assert set(scheme_names()) >= {"born-again", "multi-teacher", "takd", "dml", "early-stop",
                                   "noisy-student", "transfer"}


def test_ensemble_arithmetic_and_geometric_means():
    # teacher A: p = [0.8, 0.2], teacher B: p = [0.2, 0.8]; weights 3:1, T = 2 (logits scaled by T)
    a, b = Fixed([2 * math.log(0.8), 2 * math.log(0.2)]), Fixed([2 * math.log(0.2), 2 * math.log(0.8)])
    x = torch.zeros(1, 1)
    arith = TeacherEnsemble([a, b], "arithmetic", [3, 1], temperature=2.0)(x)
    # 0.75 * 0.8 + 0.25 * 0.2 = 0.65
    assert torch.softmax(arith / 2.0, -1)[0, 0].item() == pytest.approx(0.65, abs=1e-6)
    geo = TeacherEnsemble([a, b], "geometric", [3, 1], temperature=2.0)(x)
    # 0.8^.75 0.2^.25 / (0.8^.75 0.2^.25 + 0.2^.75 0.8^.25)
    num = 0.8 ** 0.75 * 0.2 ** 0.25
    assert torch.softmax(geo / 2.0, -1)[0, 0].item() == pytest.approx(num / (num + 0.2 ** 0.75 * 0.8 ** 0.25),
                                                                       abs=1e-6)


def test_ensemble_rejects_bad_weights():
    with pytest.raises(ConfigError, match="weight"):
        TeacherEnsemble([nn.Linear(2, 2)], weights=[1, 2])
    with pytest.raises(ConfigError, match="combine"):
        TeacherEnsemble([nn.Linear(2, 2)], combine="median")


def test_mutual_learning_loss():
    # two peers with logits [0, 0] and [ln 3, 0] (p = [3/4, 1/4]), label 0, T = 1
    s, p = Fixed([0.0, 0.0]), Fixed([math.log(3), 0.0])
    losses = MutualLearning(s, [p])(torch.zeros(1, 1), torch.tensor([0]))
    assert losses["peer0_ce"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert losses["peer1_ce"].item() == pytest.approx(-math.log(0.75), abs=1e-6)
    # KL(p1 || p0) = 3/4 ln(3/2) + 1/4 ln(1/2); KL(p0 || p1) = 1/2 ln(2/3) + 1/2 ln 2
    assert losses["peer0_kl"].item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    assert losses["peer1_kl"].item() == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2), abs=1e-6)
    total = sum(losses[k] for k in ("peer0_ce", "peer1_ce", "peer0_kl", "peer1_kl"))
    assert losses["loss"].item() == pytest.approx(total.item(), abs=1e-6)


def test_munge_swaps_with_nearest_neighbour():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [10.0, 10.0]])
    # p = 1: every attribute moves to the neighbour's value, jittered with std |a - b| / s
    out = munge(x, multiplier=1, p=1.0, s=1e6, seed=0)
    assert torch.allclose(out, torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]), atol=1e-4)
    # p = 0: nothing changes; multiplier sets the size
    assert torch.equal(munge(x, multiplier=3, p=0.0), x.repeat(3, 1))


def test_input_noise_only_in_training_mode():
    model = nn.Identity()
    handle = add_input_noise(model, 0.5)
    x = torch.zeros(100, 3)
    model.eval()
    assert torch.equal(model(x), x)
    model.train()
    assert model(x).std().item() == pytest.approx(0.5, rel=0.2)
    handle.remove()
    assert torch.equal(model(x), x)


def test_scheme_options_are_validated():
    with pytest.raises(ConfigError, match="generations"):
        validate_options("born-again", {"generation": 2})
    with pytest.raises(ConfigError, match="combine"):
        validate_options("multi-teacher", {"combine": "median"})
    assert validate_options("born-again", {"generations": "3"}) == {"generations": 3}
    with pytest.raises(ConfigError, match="scheme"):
        run_scheme(parse_config({"distill": {"scheme": {"name": "born-agian"}}}))


def test_noisy_student_refuses_a_smaller_student(tmp_path):
    cfg = parse_config({"data": {"dataset": "digits", "limit_train": 60, "limit_test": 20},
                        "teacher": {"model": "mlp-medium"}, "student": {"model": "mlp-simple"},
                        "train": {"epochs": 1, "progress": False},
                        "distill": {"scheme": {"name": "noisy-student"}}, "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="smaller than its teacher"):
        run_scheme(cfg)


def test_method_key_may_name_a_scheme(monkeypatch, tmp_path):
    import kdistill.schemes as schemes

    seen = {}
    monkeypatch.setitem(schemes.SCHEMES._entries, "takd",
                        lambda cfg, **kw: seen.setdefault("scheme", cfg.distill.scheme.name))
    schemes.run_experiment(parse_config({"distill": {"method": "takd"}, "teacher": {"model": "cnn-simple"},
                                         "student": {"model": "mlp-simple"}, "output_dir": str(tmp_path)}))
    assert seen["scheme"] == "takd"


@pytest.mark.parametrize("options", [{"teachers": ["mlp-simple", "mlp-medium"]}, {}])
def test_multi_teacher_refuses_a_teacher_checkpoint_it_would_not_use(tmp_path, options):
    # --teacher sets teacher.checkpoint; an ensemble listed in options.teachers ignored it silently
    cfg = parse_config({"data": {"dataset": "digits", "limit_train": 60, "limit_test": 20},
                        "teacher": {"model": "mlp-medium", "checkpoint": str(tmp_path / "t.safetensors")},
                        "student": {"model": "mlp-simple"}, "train": {"epochs": 1, "progress": False},
                        "distill": {"scheme": {"name": "multi-teacher", "options": options}},
                        "output_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="t.safetensors"):
        run_scheme(cfg)
    assert not (tmp_path / "out").exists()  # refused before any teacher trained


def test_multi_teacher_accepts_a_teacher_checkpoint_that_is_a_member(tmp_path, monkeypatch):
    import kdistill.schemes.multi_teacher as multi

    ckpt = str(tmp_path / "t.safetensors")
    cfg = parse_config({"data": {"dataset": "digits", "limit_train": 60, "limit_test": 20},
                        "teacher": {"model": "mlp-medium", "checkpoint": ckpt},
                        "student": {"model": "mlp-simple"}, "train": {"epochs": 1, "progress": False},
                        "distill": {"scheme": {"name": "multi-teacher", "options": {
                            "teachers": [{"model": "mlp-medium", "checkpoint": ckpt}, "mlp-simple"]}}},
                        "output_dir": str(tmp_path / "out")})
    members = []

    class Stop(Exception):
        pass

    def get_teacher(member, data, out):
        members.append(member.teacher.checkpoint)
        raise Stop

    monkeypatch.setattr(multi, "get_teacher", get_teacher)
    with pytest.raises(Stop):
        run_scheme(cfg)
    assert members == [ckpt]
