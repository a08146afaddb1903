"""The variational student: KL approximation, local reparameterisation, annealing, sparsify, runs, export."""

import json
import logging
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kdistill.cli.main import main
from kdistill.compress.artifact import read_artifact
from kdistill.compress.export import export_model
from kdistill.compress.variational import (
    K1,
    K2,
    K3,
    VariationalConv2d,
    VariationalLinear,
    kl_approximation,
    kl_divergence,
    load_variational,
    make_variational,
    sparsify,
    sparsity_report,
    variational_layers,
)
from kdistill.config import ModelConfig, parse_config
from kdistill.distiller import Distiller
from kdistill.errors import ConfigError, ModelError
from kdistill.experiment import build_distiller, evaluate_checkpoint, load_model, run_distill
from kdistill.methods.hooks import FeatureHooks
from kdistill.methods.variational import (
    VariationalKL,
    VariationalSupervised,
    anneal_factor,
    variational_methods,
)
from kdistill.models import create_model
from kdistill.train.checkpoint import read_checkpoint_metadata, save_checkpoint


def hand_kl(log_alpha: float) -> float:
    """Molchanov et al. 2017, eq. 14, negated: KL = k1 - k1 sigmoid(k2 + k3 la) + 0.5 log(1 + 1/alpha)."""
    sigmoid = 1.0 / (1.0 + math.exp(-(K2 + K3 * log_alpha)))
    return K1 - K1 * sigmoid + 0.5 * math.log(1.0 + math.exp(-log_alpha))


# ---------------------------------------------------------------- the losses, by hand


def test_kl_approximation_matches_the_formula_at_known_log_alphas():
    assert (K1, K2, K3) == (0.63576, 1.87320, 1.48695)
    points = [-8.0, -2.0, 0.0, 1.5, 3.0, 8.0]
    got = kl_approximation(torch.tensor(points, dtype=torch.float64))
    for value, la in zip(got.tolist(), points):
        assert value == pytest.approx(hand_kl(la), rel=1e-12)
    # log alpha = 0: 0.63576 * (1 - sigmoid(1.8732)) + 0.5 ln 2
    assert got[2].item() == pytest.approx(0.63576 * (1 - 1 / (1 + math.exp(-1.8732))) + 0.5 * math.log(2))
    # large alpha: the weight is noise and costs (almost) nothing; the KL falls monotonically
    assert got[-1].item() < 2e-4
    assert all(a > b for a, b in zip(got.tolist(), got[1:].tolist()))


def test_layer_kl_uses_the_clipped_log_alpha():
    layer = VariationalLinear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)  # log theta^2 = 0, so log alpha = log sigma^2 (clipped to [-8, 8])
        layer.log_sigma2.copy_(torch.tensor([[-20.0, -2.0], [0.0, 20.0]]))
    assert layer.log_alpha.flatten().tolist() == pytest.approx([-8.0, -2.0, 0.0, 8.0], abs=1e-6)
    expected = sum(hand_kl(la) for la in (-8.0, -2.0, 0.0, 8.0))
    assert layer.kl().item() == pytest.approx(expected, rel=1e-5)
    model = nn.Sequential(layer, nn.ReLU(), VariationalLinear(2, 1))
    assert kl_divergence(model).item() == pytest.approx(expected + model[2].kl().item(), rel=1e-6)


def test_local_reparameterisation_mean_and_variance_by_hand(monkeypatch):
    layer = VariationalLinear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
        layer.log_sigma2.copy_(torch.log(torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])))
    x = torch.tensor([[1.0, 2.0, -1.0]])
    mean = [1 - 4 - 0.5 + 0.5, 0 + 6 + 1 - 1]                      # x theta^T + b = [-3, 6]
    variance = [0.1 * 1 + 0.2 * 4 + 0.3 * 1, 0.4 * 1 + 0.5 * 4 + 0.6 * 1]  # x^2 sigma^2^T = [1.2, 3.0]
    layer.train()
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.zeros_like(t))
    assert layer(x).flatten().tolist() == pytest.approx(mean, abs=1e-6)
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.ones_like(t))
    assert layer(x).flatten().tolist() == pytest.approx([m + math.sqrt(v) for m, v in zip(mean, variance)],
                                                        abs=1e-4)
    monkeypatch.undo()
    # and the real sampler: the moments of many draws
    torch.manual_seed(0)
    with torch.no_grad():
        draws = layer(x.expand(100_000, 3))
    assert draws.mean(0).tolist() == pytest.approx(mean, abs=0.03)
    assert draws.var(0).tolist() == pytest.approx(variance, rel=0.03)


def test_conv_local_reparameterisation_matches_convolving_the_variances(monkeypatch):
    torch.manual_seed(1)
    conv = VariationalConv2d(2, 3, 3, padding=1, log_sigma2_init=-2.0)
    x = torch.randn(2, 2, 5, 5)
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.ones_like(t))
    conv.train()
    mean = F.conv2d(x, conv.weight, conv.bias, padding=1)
    variance = F.conv2d(x * x, torch.full_like(conv.weight, math.exp(-2.0)), None, padding=1)
    assert torch.allclose(conv(x), mean + torch.sqrt(variance + 1e-8), atol=1e-5)


def test_annealing_schedule_and_the_method_term():
    assert [anneal_factor(e, 5) for e in range(7)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    assert anneal_factor(0, 0) == 1.0 and anneal_factor(3, 1) == 1.0
    model = make_variational(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    method = VariationalKL(kl_weight=0.5, anneal_epochs=4)
    method.setup(model, None, torch.zeros(2, 4), num_train=200)
    kl = kl_divergence(model).item()
    for epoch, factor in ((0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)):
        assert method.term(epoch).item() == pytest.approx(0.5 * factor * kl / 200, rel=1e-6)
    # the method holds the student without owning its parameters
    assert list(method.parameters()) == []
    with pytest.raises(ValueError):
        VariationalKL(anneal_epochs=-1)


# ---------------------------------------------------------------- layers in a model


def test_sparsify_zeroes_exactly_the_weights_at_or_above_the_threshold():
    layer = VariationalLinear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.log_sigma2.copy_(torch.tensor([[2.9, 3.0, 3.1], [-5.0, 7.9, 2.999]]))
    model = nn.Sequential(layer)
    plain = sparsify(model)
    assert type(plain[0]) is nn.Linear and type(model[0]) is VariationalLinear  # a copy
    assert plain[0].weight.tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]]
    assert torch.equal(plain[0].bias, layer.bias)
    loose = sparsify(model, threshold=7.95)
    assert loose[0].weight.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    # the eval-mode variational layer computes exactly what the sparsified one does
    x = torch.randn(4, 3)
    model.eval()
    assert torch.equal(model(x), plain(x))
    report = sparsity_report(model)
    assert (report.layers[0].weights, report.layers[0].nonzero) == (6, 3)
    assert report.total_params == 8 and report.nonzero_params == 3 + int((layer.bias != 0).sum())


@pytest.mark.parametrize("name", ["mlp-medium", "cnn-simple"])
def test_make_variational_keeps_paths_and_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, (1, 8, 8), 10).eval()
    x = torch.randn(6, 1, 8, 8)
    before = model(x)
    paths = [n for n, _ in model.named_modules()]
    keys = set(model.state_dict())
    same = make_variational(model, log_sigma2_init=-50.0)
    assert same is model and [n for n, _ in model.named_modules()] == paths
    layers = variational_layers(model)
    assert layers and all(type(m) in (VariationalLinear, VariationalConv2d) for m in layers.values())
    assert set(model.state_dict()) == keys | {f"{p}.log_sigma2" for p in layers}
    model.eval()
    assert torch.allclose(model(x), before, atol=1e-6)
    # feature hooks find the same module paths
    hook_path = "features.0"
    hooks = FeatureHooks(model, [hook_path], "student")
    model(x)
    assert hooks.pop()[hook_path].shape[0] == 6


def test_make_variational_errors_and_skip():
    with pytest.raises(ModelError, match="no nn.Linear or nn.Conv2d"):
        make_variational(nn.Sequential(nn.ReLU()))
    with pytest.raises(ModelError, match="threshold"):
        make_variational(nn.Linear(2, 2), threshold=9.0)
    with pytest.raises(ModelError, match="make_variational"):
        kl_divergence(nn.Linear(2, 2))
    model = make_variational(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), skip=["1"])
    assert type(model[0]) is VariationalLinear and type(model[1]) is nn.Linear


def test_training_mode_is_stochastic_and_learns_the_noise():
    torch.manual_seed(0)
    model = make_variational(create_model("mlp-simple", (1, 8, 8), 10), log_sigma2_init=-4.0).train()
    x = torch.randn(3, 1, 8, 8)
    assert not torch.equal(model(x), model(x))
    loss = model(x).sum() + kl_divergence(model)
    loss.backward()
    assert all(m.log_sigma2.grad is not None and m.log_sigma2.grad.abs().sum() > 0
               for m in variational_layers(model).values())


# ---------------------------------------------------------------- config, methods, objectives


def test_config_field_and_methods():
    cfg = ModelConfig.model_validate({"model": "mlp-simple", "variational": {"threshold": 2.5}})
    assert cfg.variational.threshold == 2.5 and cfg.variational.anneal_epochs == 5
    assert ModelConfig(model="mlp-simple").variational is None
    with pytest.raises(ConfigError, match="student.variational.treshold"):
        parse_config({"student": {"model": "mlp-simple", "variational": {"treshold": 3}}})
    with pytest.raises(ConfigError, match="threshold"):
        parse_config({"student": {"model": "mlp-simple", "variational": {"threshold": 9}}})


def test_run_adds_the_method_and_refuses_it_for_a_dense_student(caplog, tmp_path):
    cfg = parse_config({"data": {"dataset": "digits"}, "teacher": {"model": "mlp-simple"},
                        "student": {"model": "mlp-simple", "variational": {"kl_weight": 0.3}}})
    teacher = create_model("mlp-simple", (1, 8, 8), 10)
    student = make_variational(create_model("mlp-simple", (1, 8, 8), 10))
    with caplog.at_level(logging.INFO, logger="kdistill"):
        distiller = build_distiller(cfg, teacher, student)
    assert "adding the 'variational' KL term" in caplog.text
    assert [type(m) for m in distiller.methods] == [VariationalKL]
    assert distiller.methods[0].kl_weight == 0.3
    # listed with its own options: kept, the missing ones from student.variational
    listed = variational_methods(parse_config({"distill": {"methods": [
        {"name": "variational", "options": {"anneal_epochs": 0}}]}}).distill.method_list(), cfg.student, student)
    assert listed[0].options == {"kl_weight": 0.3, "anneal_epochs": 0}
    dense = parse_config({"data": {"dataset": "digits", "limit_train": 50}, "teacher": {"model": "mlp-simple"},
                          "student": {"model": "mlp-simple"}, "distill": {"method": "variational"},
                          "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="not variational"):
        run_distill(dense)  # before any training
    assert not (tmp_path / "teacher").exists()
    with pytest.raises(ConfigError, match="no variational layers"):
        Distiller(teacher=teacher, student=create_model("mlp-simple", (1, 8, 8), 10), methods=[(VariationalKL(), 1.0)])


def test_objectives_through_fit(tmp_path):
    from kdistill.config import TrainConfig
    from kdistill.data import load_dataset
    from kdistill.train import fit

    data = load_dataset("digits").subset(200, 50)
    train = TrainConfig(epochs=2, batch_size=50, progress=False)
    student = make_variational(create_model("mlp-simple", (1, 8, 8), 10))
    history = fit(VariationalSupervised(student, anneal_epochs=2), data, train)
    first, second = history.epochs
    assert first["loss"] == pytest.approx(first["student"] + first["variational_kl"], rel=1e-5)
    assert second["variational_kl"] > first["variational_kl"]  # the warm-up doubles its weight
    teacher = create_model("mlp-simple", (1, 8, 8), 10)
    distiller = Distiller(teacher=teacher, student=student, methods=[(VariationalKL(anneal_epochs=0), 1.0)])
    record = fit(distiller, data, train).epochs[-1]
    assert record["variational_kl"] > 0 and {"kd", "student"} <= set(record)


# ---------------------------------------------------------------- runs, checkpoints, export


def _yaml(tmp_path, extra=""):
    cfg = tmp_path / "var.yaml"
    cfg.write_text(
        "data: {dataset: digits, limit_train: 300, limit_test: 100}\n"
        "teacher: {model: mlp-simple}\n"
        "student: {model: mlp-medium, variational: {anneal_epochs: 1}}\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        "train: {epochs: 2, batch_size: 64, progress: false}\n" + extra)
    return cfg


def test_cli_distill_evaluate_export(tmp_path, capsys):
    cfg = _yaml(tmp_path)
    assert main(["distill", str(cfg)]) == 0
    out = capsys.readouterr().out
    student = tmp_path / "runs" / "student"
    sparse = student / "sparse.safetensors"
    assert str(sparse) in out.replace("\n", "")
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["size_bytes"] == sparse.stat().st_size
    assert 0 < metrics["nonzero_params"] < metrics["params"]
    tensors, meta = read_artifact(sparse, "sparse-bitmask")
    assert meta["model_spec"]["variational"]["threshold"] == 3.0 and meta["epoch"] == 1
    assert not any(k.endswith("log_sigma2") for k in tensors)
    # the sparse file and the training checkpoint (its last epoch) rebuild the same plain model
    model, _ = load_model(sparse)
    trained, _ = load_model(student / "last.safetensors")
    assert not any(isinstance(m, VariationalLinear) for m in trained.modules())
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(model(x), trained(x))
    assert main(["evaluate", str(sparse), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    from kdistill.data import load_dataset
    from kdistill.eval import accuracy, predict

    full = load_dataset("digits")  # limit_test is not part of the data record: the whole test split
    assert evaluated["accuracy"] == pytest.approx(accuracy(predict(model, full.x_test), full.y_test))
    assert evaluated["nonzero_params"] == metrics["nonzero_params"]
    onnx_path = tmp_path / "s.onnx"
    assert main(["export", str(sparse), "--format", "onnx", "-o", str(onnx_path)]) == 0
    st_path = tmp_path / "s.safetensors"
    assert main(["export", str(student / "last.safetensors"), "--format", "safetensors", "-o", str(st_path)]) == 0
    assert read_artifact(st_path)[1]["format"] == "sparse-bitmask"
    assert torch.equal(load_model(st_path)[0](x), model(x))


def test_cli_train_student_alone(tmp_path, capsys):
    cfg = _yaml(tmp_path)
    assert main(["train", str(cfg), "--role", "student"]) == 0
    student = tmp_path / "runs" / "student"
    history = read_checkpoint_metadata(student / "last.safetensors")["history"]
    assert all("variational_kl" in h for h in history)
    assert (student / "sparse.safetensors").exists()


def _sparse_checkpoint(tmp_path, zero_fraction=0.9):
    torch.manual_seed(0)
    model = make_variational(create_model("mlp-medium", (1, 8, 8), 10))
    with torch.no_grad():  # push most weights past the threshold, as a long run would
        for layer in variational_layers(model).values():
            noise = torch.rand_like(layer.log_sigma2) < zero_fraction
            layer.log_sigma2[noise] = 5.0
    spec = {"model": "mlp-medium", "options": {}, "input_shape": [1, 8, 8], "num_classes": 10,
            "dataset": "digits", "variational": {"threshold": 3.0}}
    path = save_checkpoint(tmp_path / "v.safetensors", {"model": model}, {"model_spec": spec})
    return model.eval(), path


def test_export_stores_zeros_sparsely(tmp_path):
    pytest.importorskip("onnx")
    import onnx

    model, path = _sparse_checkpoint(tmp_path)
    plain, _ = load_model(path)
    report = sparsity_report(plain)
    assert 0.85 < report.weight_sparsity < 0.95
    onnx_result = export_model(path, "onnx", tmp_path / "v.onnx")
    assert onnx_result.max_abs_diff < 1e-4
    graph = onnx.load(str(tmp_path / "v.onnx")).graph
    assert len(graph.sparse_initializer) == 3  # the three weight matrices
    dense_onnx = 4 * sum(p.numel() for p in plain.parameters())
    assert onnx_result.size_bytes < 0.5 * dense_onnx
    st = export_model(path, "safetensors", tmp_path / "v-export.safetensors")
    assert st.size_bytes < 0.3 * 4 * report.total_params
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(load_model(st.path)[0](x), model(x))
    # load_variational keeps the Bayesian layers, e.g. to sweep thresholds
    again, _ = load_variational(path)
    assert sparsity_report(again, threshold=7.9).nonzero_params > report.nonzero_params


def test_evaluate_checkpoint_reports_the_sparse_size(tmp_path):
    from kdistill.data import load_dataset

    _, path = _sparse_checkpoint(tmp_path)
    metrics = evaluate_checkpoint(path, load_dataset("digits").subset(50, 40))
    assert metrics["size_bytes"] < 0.3 * metrics["dense_size_bytes"]
    assert metrics["nonzero_params"] < metrics["params"]


def test_example_configs_are_valid():
    from pathlib import Path

    from kdistill.config import load_config

    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("variational-mnist.yaml", "variational-fashion-mnist.yaml", "methods/variational.yaml"):
        cfg = load_config(root / name)
        assert cfg.student.variational is not None and cfg.student.variational.threshold == 3.0


def test_variational_run_resumes_from_its_checkpoint(tmp_path):
    from kdistill.experiment import train_model

    raw = {"data": {"dataset": "digits", "limit_train": 200, "limit_test": 50},
           "student": {"model": "mlp-simple", "variational": {"anneal_epochs": 2}},
           "train": {"epochs": 1, "batch_size": 50, "progress": False}, "output_dir": str(tmp_path)}
    first = train_model(parse_config(raw), "student")
    raw["train"]["epochs"] = 2
    resumed = train_model(parse_config(raw), "student", resume=tmp_path / "student" / "last.safetensors")
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert resumed.history[0] == first.history[0]
    assert read_checkpoint_metadata(resumed.checkpoint)["epoch"] == 1


def test_an_objective_without_the_kl_term_is_refused(tmp_path):
    from kdistill.schemes import run_experiment

    cfg = parse_config({"data": {"dataset": "digits", "limit_train": 100, "limit_test": 20},
                        "student": {"model": "mlp-simple", "variational": {}},
                        "distill": {"scheme": {"name": "dml"}}, "output_dir": str(tmp_path),
                        "train": {"epochs": 1, "progress": False}})
    with pytest.raises(ConfigError, match="no place for the variational KL term"):
        run_experiment(cfg)
    assert not (tmp_path / "student" / "last.safetensors").exists()
