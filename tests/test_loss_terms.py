"""The loss as an explicit weighted sum of registered terms: resolution, options, hooks, and unchanged arithmetic."""

import copy
import importlib.util
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from helpers import Fixed
from torch import nn

from kdistill.compress.variational import make_variational
from kdistill.config import load_config, parse_config
from kdistill.data import DataSplits
from kdistill.distiller import Distiller, resolve_terms
from kdistill.errors import ConfigError
from kdistill.experiment import build_distiller
from kdistill.experiment.assembly import loss_terms
from kdistill.methods import DistillationMethod
from kdistill.methods.ce import LabelLoss
from kdistill.methods.kd import HintonKD
from kdistill.registry import METHODS
from kdistill.schemes import run_experiment, validate_options
from kdistill.schemes.dml import mutual_loss
from kdistill.schemes.transfer import without_labels
from kdistill.train import fit

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugins" / "reverse_kl.py"


@pytest.fixture(scope="module", autouse=True)
def reverse_kl():
    """The example file, imported (which registers "reverse-kl") for this module's tests only."""
    spec = importlib.util.spec_from_file_location("reverse_kl_example", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    METHODS._entries.pop("reverse-kl")  # other tests see the built-in registry


def digits_cfg(**distill):
    return parse_config({
        "data": {"dataset": "digits", "limit_train": 160, "limit_test": 40},
        "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple"}, "distill": distill,
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "device": "cpu"}})


def as_tuples(terms):
    return [(t.name, t.weight, t.options) for t in terms]


# --------------------------------------------------------------------------- the explicit sum


def test_explicit_sum_matches_a_hand_computation(reverse_kl):
    # student [1, 2], teacher [2, 1], label 0, T = 2: p_s = softmax([0.5, 1]), p_t = softmax([1, 0.5])
    p_s0 = 1 / (1 + math.exp(0.5))
    p_s, p_t = [p_s0, 1 - p_s0], [1 - p_s0, p_s0]
    ce = math.log(1 + math.e)
    forward_kl = sum(t * math.log(t / s) for s, t in zip(p_s, p_t))
    reverse = sum(s * math.log(s / t) for s, t in zip(p_s, p_t))
    distiller = Distiller(teacher=Fixed([2.0, 1.0]), student=Fixed([1.0, 2.0]),
                          terms=[(LabelLoss(), 0.3), (HintonKD(2.0), 0.5), (reverse_kl.ReverseKL(2.0), 0.25)])
    out = distiller(torch.zeros(1, 3), torch.tensor([0]))
    assert out["student"].item() == pytest.approx(ce, abs=1e-6)
    assert out["kd"].item() == pytest.approx(4 * forward_kl, abs=1e-6)
    assert out["reverse_kl"].item() == pytest.approx(4 * reverse, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.3 * ce + 0.5 * 4 * forward_kl + 0.25 * 4 * reverse, abs=1e-6)
    assert distiller.describe_loss() == "0.3 * ce + 0.5 * kd(T=2) + 0.25 * reverse-kl(T=2)"


def test_terms_cannot_be_mixed_with_the_alpha_shorthand():
    with pytest.raises(ConfigError, match="terms= is the whole loss; alpha"):
        Distiller(teacher=Fixed([1.0]), student=Fixed([1.0]), alpha=0.5, terms=[(LabelLoss(), 1.0)])
    with pytest.raises(ConfigError, match="distill.terms lists the whole loss"):
        digits_cfg(alpha=0.5, terms=[{"name": "ce"}])
    with pytest.raises(ConfigError, match="distill.terms is empty"):
        digits_cfg(terms=[])


def test_alpha_expands_to_ce_and_kd_and_terms_reach_kd():
    assert as_tuples(resolve_terms(digits_cfg(alpha=0.25, temperature=3).distill)) == [
        ("ce", 0.75, {"label_smoothing": 0.0}), ("kd", 0.25, {"temperature": 3.0})]
    cfg = digits_cfg(temperature=3, terms=[{"name": "kd", "weight": 2.0, "options": {"temperature": 1.5}},
                                           {"name": "ce", "weight": 0.5}])
    assert as_tuples(resolve_terms(cfg.distill)) == [("kd", 2.0, {"temperature": 1.5}),
                                                      ("ce", 0.5, {"label_smoothing": 0.0})]


def test_a_replacing_method_drops_kd_unless_alpha_is_set():
    assert [(t.name, t.weight) for t in resolve_terms(digits_cfg(method="dkd").distill)] == [("ce", 1.0), ("dkd", 1.0)]
    assert [(t.name, t.weight) for t in resolve_terms(digits_cfg(method="reverse-kl").distill)] == [
        ("ce", 1.0), ("reverse-kl", 1.0)]
    kept = resolve_terms(digits_cfg(alpha=0.5, method="dkd").distill)
    assert [(t.name, t.weight) for t in kept] == [("ce", 0.5), ("kd", 0.5), ("dkd", 1.0)]


def test_temperature_reaches_terms_by_declaration_not_by_parameter_name():
    class NamedTemperature(DistillationMethod):  # has the parameter but does not declare the contract
        def __init__(self, temperature: float = 7.0) -> None:
            super().__init__()
            self.temperature = temperature

    METHODS.register("test-named-temperature")(NamedTemperature)
    try:
        terms = resolve_terms(digits_cfg(temperature=3, methods=[{"name": "test-named-temperature"},
                                                                  {"name": "reverse-kl"}]).distill)
    finally:
        METHODS._entries.pop("test-named-temperature")
    assert terms[-2].options == {} and terms[-1].options == {"temperature": 3.0}


# --------------------------------------------------------------------------- option types


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("dkd", {"warmup_epochs": 2.7}, "'warmup_epochs' is 2.7, but it must be of type int"),
    ("dkd", {"alpha": True}, "'alpha' is True, but it must be of type float"),
    ("fitnets", {"stage1_epochs": True}, "'stage1_epochs' is True, but it must be of type int"),
    ("regression", {"loss": 3}, "'loss' is 3, but it must be of type str"),
    ("kd", {"loss_fn": "kl"}, "has no option 'loss_fn'"),  # Python-only keyword
])
def test_wrong_option_types_are_config_errors(name, options, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        resolve_terms(digits_cfg(terms=[{"name": name, "options": options}]).distill)


def test_whole_numbers_are_accepted_and_scheme_options_share_the_check():
    terms = resolve_terms(digits_cfg(methods=[{"name": "dkd", "options": {"warmup_epochs": 2.0, "beta": 4}}]).distill)
    assert terms[-1].options["warmup_epochs"] == 2 and isinstance(terms[-1].options["beta"], float)
    with pytest.raises(ConfigError, match="'generations' is True, but it must be of type int"):
        validate_options("born-again", {"generations": True})


# --------------------------------------------------------------------------- the examples


def _resolved(path: Path) -> list[dict]:
    cfg = load_config(path)
    d = cfg.distill
    scheme = d.scheme.name if d.scheme else None
    if any(m.name in {"crosskd", "pred-mimic", "feat-imitation"} for m in d.terms or d.method_list()):
        return [{"name": "detection", "weight": 1.0, "options": {}}] + [
            {"name": m.name, "weight": m.weight, "options": m.options} for m in d.terms or d.method_list()]
    if scheme == "dml":
        loss = mutual_loss(cfg, d.scheme.options.get("temperature"))
        return [{"name": "ce", "weight": loss["ce_weight"], "options": {"label_smoothing": loss["label_smoothing"]}},
                {"name": "kd", "weight": loss["kd_weight"], "options": {"temperature": loss["temperature"]}}]
    if scheme == "transfer":
        cfg = without_labels(cfg)
    layer = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    student = make_variational(layer) if cfg.student.variational is not None else layer
    return [t.to_dict() for t in loss_terms(cfg, student)]


def test_every_example_resolves_to_the_terms_and_weights_it_had():
    # recorded from the code before the loss became a list of terms
    expected = json.loads((Path(__file__).parent / "experiment" / "example_loss_terms.json").read_text())
    for key, terms in expected.items():
        assert _resolved(ROOT / key) == terms, key
    listed = {str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("**/*.yaml") if "study" not in p.name}
    assert listed == set(expected)


# --------------------------------------------------------------------------- unchanged arithmetic


class HintonFormula(nn.Module):
    """The loss exactly as the Distiller computed it before it became a list of terms."""

    def __init__(self, distiller_before: dict) -> None:
        super().__init__()
        self.__dict__.update(distiller_before)

    def __call__(self, student, teacher, methods, inputs, labels, epoch):
        s, t_logits = student(inputs), teacher(inputs)
        t, alpha = self.temperature, self.alpha
        total = s.new_zeros((), dtype=torch.float32)
        if alpha < 1.0:
            ce = self.ce(s, labels)
            total = total + (1.0 - alpha) * ce
        if alpha > 0.0 and self.regression:
            total = total + alpha * nn.functional.mse_loss(s.float(), t_logits.float())
        elif alpha > 0.0:
            kd = t * t * nn.functional.kl_div(torch.log_softmax(s.float() / t, -1), torch.softmax(t_logits.float() / t, -1),
                                              reduction="batchmean")
            total = total + alpha * kd
        return total, s


def _steps(objective_loss, params, batches, steps=4):
    optimizer = torch.optim.AdamW(params, lr=0.01)
    values = []
    for x, y in batches[:steps]:
        loss = objective_loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.detach().clone())
    return values


@pytest.mark.parametrize("case", ["kd", "alpha-one", "regression"])
def test_the_shorthand_trains_bit_identically_to_the_formula(case):
    torch.manual_seed(0)
    regression = case == "regression"
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(8, 1 if regression else 4))
    student = nn.Sequential(nn.Flatten(), nn.Linear(8, 1 if regression else 4))
    alpha = {"kd": 0.3, "alpha-one": 1.0, "regression": 0.5}[case]
    x = torch.randn(64, 8)
    y = torch.randn(64, 1).squeeze(-1) if regression else torch.randint(0, 4, (64,))
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    cfg = digits_cfg(alpha=alpha, temperature=3.0)
    twin = copy.deepcopy(student)
    distiller = build_distiller(cfg, teacher, student, regression=regression)
    new = _steps(lambda a, b: distiller(a, b)["loss"], list(student.parameters()), batches)

    ce = (lambda o, t: nn.functional.mse_loss(o.squeeze(-1), t)) if regression else nn.CrossEntropyLoss()
    formula = HintonFormula({"alpha": alpha, "temperature": 3.0, "regression": regression, "ce": ce})
    old = _steps(lambda a, b: formula(twin, teacher, [], a, b, 0)[0], list(twin.parameters()), batches)
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), twin.parameters()))


def test_a_hint_stage_mutes_the_built_in_terms_as_before():
    # FitNets stage 1: the total was (ce and kd) * 0.0 + hint; every student parameter keeps a zero gradient
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    student = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    cfg = digits_cfg(alpha=0.9, methods=[{"name": "fitnets", "weight": 2.0, "options": {
        "student_layer": "0", "teacher_layer": "0", "stage1_epochs": 1}}])
    distiller = build_distiller(cfg, teacher, student)
    distiller.setup_methods(torch.randn(2, 6), 32)
    out = distiller(torch.randn(8, 6), torch.randint(0, 3, (8,)))
    assert torch.equal(out["loss"], 0.0 + 2.0 * out["fitnets"])
    out["loss"].backward()
    assert torch.equal(student[2].weight.grad, torch.zeros_like(student[2].weight))
    assert {"student", "kd", "fitnets"} <= set(out)


# --------------------------------------------------------------------------- label smoothing, DML


def test_label_smoothing_reaches_the_ce_term():
    cfg = digits_cfg(alpha=0.5)
    cfg.train.label_smoothing = 0.2
    teacher, student = nn.Linear(5, 3), nn.Linear(5, 3)
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    out = build_distiller(cfg, teacher, student)(x, y)
    assert torch.allclose(out["student"], nn.functional.cross_entropy(student(x), y, label_smoothing=0.2))
    with pytest.raises(ConfigError, match="label_smoothing smooths class labels"):
        build_distiller(cfg, nn.Linear(5, 1), nn.Linear(5, 1), regression=True)


def test_dml_honours_the_loss_settings_or_refuses_them():
    def dml(options=None, **distill):
        cfg = parse_config({"student": {"model": "mlp-simple"}, "train": {"label_smoothing": 0.1},
                            "distill": {**distill, "scheme": {"name": "dml", "options": options or {}}}})
        return mutual_loss(cfg, (options or {}).get("temperature"))

    assert dml() == {"ce_weight": 1.0, "kd_weight": 1.0, "temperature": 1.0, "label_smoothing": 0.1}
    assert dml(alpha=0.25, temperature=3) == {"ce_weight": 0.75, "kd_weight": 0.25, "temperature": 3.0,
                                              "label_smoothing": 0.1}
    assert dml(terms=[{"name": "kd", "weight": 2.0}])["ce_weight"] == 0.0
    with pytest.raises(ConfigError, match="temperature is given more than once"):
        dml({"temperature": 2.0}, temperature=3)
    with pytest.raises(ConfigError, match="'crd' in distill.method"):
        dml(method="crd")
    with pytest.raises(ConfigError, match="ce and kd only"):
        dml(terms=[{"name": "ce"}, {"name": "dkd"}])


# --------------------------------------------------------------------------- hooks and registration


def test_noisy_student_size_is_checked_before_the_teacher_trains(tmp_path):
    cfg = parse_config({"data": {"dataset": "digits", "limit_train": 64, "limit_test": 16},
                        "teacher": {"model": "mlp-medium"}, "student": {"model": "mlp-simple"},
                        "distill": {"scheme": {"name": "noisy-student"}}, "output_dir": str(tmp_path),
                        "train": {"epochs": 1, "progress": False}})
    with pytest.raises(ConfigError, match="smaller than its teacher"):
        run_experiment(cfg)
    assert not (tmp_path / "teacher").exists()


def test_fitnets_hint_stage_is_checked_by_its_own_hook(tmp_path):
    cfg = digits_cfg(methods=[{"name": "fitnets", "options": {"stage1_epochs": 2}}])
    cfg.output_dir = str(tmp_path)
    with pytest.raises(ConfigError, match="stage1_epochs is 2 but the student trains 2 epochs"):
        run_experiment(cfg)


def test_the_old_live_teacher_attribute_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="needs_live_teacher"):
        class Old(DistillationMethod):
            needs_teacher_features = True
    assert Old.needs_live_teacher
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class New(DistillationMethod):
            needs_live_teacher = True
    assert New.needs_live_teacher


def test_the_reverse_kl_example_trains_from_python_and_from_a_config(tmp_path, reverse_kl):
    cfg = digits_cfg(method="reverse-kl", temperature=2.0)
    cfg.output_dir = str(tmp_path)
    result = run_experiment(cfg)  # validation looks the user's method up when it runs
    assert [(t["name"], t["weight"]) for t in _metadata(result.checkpoint)["loss_terms"]] == [
        ("ce", 1.0), ("reverse-kl", 1.0)]
    assert "reverse_kl" in result.history[-1]

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 4, 4, generator=g)
    y = x.flatten(1)[:, :3].argmax(1)
    data = DataSplits("toy", x[:64], y[:64], x[64:], y[64:], 3, (1, 4, 4))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    distiller = Distiller(teacher=teacher, student=student,
                          terms=[(LabelLoss(), 0.5), (reverse_kl.ReverseKL(temperature=2.0), 0.5)])
    history = fit(distiller, data, cfg.train)
    assert all(math.isfinite(row["reverse_kl"]) for row in history.epochs)


def _metadata(path):
    from kdistill.train.checkpoint import read_checkpoint_metadata

    return read_checkpoint_metadata(path)


def test_tune_keeps_the_loss_the_config_asks_for():
    from kdistill.tune import apply_params, default_search, normalised_dump

    listed = digits_cfg(terms=[{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5}])
    assert {k for k in default_search(listed) if k.startswith("distill.")} == {
        "distill.temperature", "distill.terms.0.weight", "distill.terms.1.weight"}
    trial = apply_params(normalised_dump(listed), {"distill.terms.1.weight": 2.0})
    assert [(t.name, t.weight) for t in resolve_terms(trial.distill)] == [("ce", 0.5), ("kd", 2.0)]

    replaced = digits_cfg(method="dkd")
    assert "distill.alpha" not in default_search(replaced)
    trial = apply_params(normalised_dump(replaced), {"distill.temperature": 2.0})
    assert [t.name for t in resolve_terms(trial.distill)] == ["ce", "dkd"]
