"""The Python API trains regressors as the CLI does: the label term follows the targets, the targets
are standardised during training, and the trained model predicts in the data's units."""

import pytest
import torch
from safetensors.torch import load_file

from kdistill import Distiller, Supervised, fit
from kdistill.config import TrainConfig, parse_config
from kdistill.data import load_dataset
from kdistill.errors import ConfigError
from kdistill.experiment import load_model, train_model
from kdistill.models import create_model
from kdistill.train import seed_everything

SCHEDULE = {"epochs": 3, "batch_size": 64, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes")


def test_fit_supervised_matches_the_cli_run(tmp_path, diabetes):
    cfg = parse_config({"data": {"dataset": "diabetes"}, "student": {"model": "mlp-simple"}, "train": SCHEDULE})
    cli = train_model(cfg, "student", out_dir=tmp_path / "cli")
    seed_everything(0)
    model = create_model("mlp-simple", tuple(diabetes.input_shape), diabetes.num_classes)
    history = fit(Supervised(model), diabetes, TrainConfig(**SCHEDULE), out_dir=tmp_path / "api")
    assert history.target_scale is not None
    assert history.target_scale.mean == pytest.approx(float(diabetes.y_train.double().mean()))
    assert history.epochs[0]["loss"] < 5  # standardised targets: a loss of order 1, not of order 1e4
    api_ckpt, cli_ckpt = load_file(tmp_path / "api" / "last.safetensors"), load_file(tmp_path / "cli" / "last.safetensors")
    assert api_ckpt.keys() == cli_ckpt.keys()
    for name in api_ckpt:
        assert torch.equal(api_ckpt[name], cli_ckpt[name]), name
    # the model fit returns, and the checkpoint read back (the same tensors), predict in the data's units
    loaded, _ = load_model(tmp_path / "cli" / "last.safetensors")
    with torch.no_grad():
        direct, reread = model.eval()(diabetes.x_test), loaded(diabetes.x_test)
    torch.testing.assert_close(direct, reread, rtol=1e-4, atol=1e-3)
    assert 25 < float(direct.mean()) < 350  # the diabetes score's range, not a standardised value
    assert cli.metrics["mse"] < cli.metrics["mse_predict_mean"] * 2


def test_distiller_regression_trains_on_standardised_targets(diabetes):
    seed_everything(0)
    teacher = create_model("mlp-simple", tuple(diabetes.input_shape), diabetes.num_classes)
    fit(Supervised(teacher), diabetes, TrainConfig(**SCHEDULE))  # a teacher in the data's units
    before = [p.clone() for p in teacher.parameters()]
    student = create_model("mlp-simple", tuple(diabetes.input_shape), diabetes.num_classes, hidden=[8])
    history = fit(Distiller(teacher=teacher, student=student, task="regression"), diabetes, TrainConfig(**SCHEDULE))
    assert history.epochs[0]["student"] < 5 and history.epochs[0]["kd"] < 5
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the teacher is untouched
    with torch.no_grad():
        assert torch.equal(teacher(diabetes.x_test[:4]), teacher(diabetes.x_test[:4]))
        assert not teacher._forward_hooks  # the standardising view is gone after fit


def test_a_classification_distiller_on_regression_data_is_refused(diabetes):
    teacher = create_model("mlp-simple", tuple(diabetes.input_shape), diabetes.num_classes)
    student = create_model("mlp-simple", tuple(diabetes.input_shape), diabetes.num_classes)
    with pytest.raises(ConfigError, match="task='regression'"):
        fit(Distiller(teacher=teacher, student=student), diabetes, TrainConfig(**SCHEDULE))
