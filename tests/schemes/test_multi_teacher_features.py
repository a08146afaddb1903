"""Feature methods on a teacher ensemble: member 0's layer by default, any member's by name."""

import pytest
import torch

from kdistill.config import parse_config
from kdistill.distiller import Distiller, build_method
from kdistill.models import create_model
from kdistill.schemes import run_experiment
from kdistill.schemes.multi_teacher import TeacherEnsemble


def members():
    torch.manual_seed(0)
    return [create_model("cnn-simple", (1, 8, 8), 10, widths=[8, 16]),
            create_model("resnet-simple", (1, 8, 8), 10, widths=[4, 8, 12], depths=[1, 1, 1])]


def test_ensemble_default_layer_is_member_zeros():
    ensemble = TeacherEnsemble(members())
    method = build_method("pkt", {}, 4.0)
    distiller = Distiller(teacher=ensemble, student=create_model("cnn-simple", (1, 8, 8), 10, widths=[4, 8]),
                          methods=[(method, 1.0)])
    assert method.teacher_layer == "teachers.0.features"
    assert distiller.feature_layer_summary() == ["pkt: student 'features' (default) <- teacher "
                                                 "'teachers.0.features' (default)"]


@pytest.mark.parametrize("name", ["fitnets", "pkt"])
def test_feature_method_trains_on_an_ensemble_with_member_zeros_features(name):
    torch.manual_seed(1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    teachers = members()
    student = create_model("cnn-simple", (1, 8, 8), 10, widths=[4, 8])
    on_ensemble = Distiller(teacher=TeacherEnsemble(teachers), student=student,
                            methods=[(build_method(name, {}, 4.0), 1.0)])
    on_ensemble.setup_methods(x[:2], len(x))
    params = [p for m in on_ensemble.trainable_modules().values() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    on_ensemble.train()
    history = []
    for _ in range(5):
        out = on_ensemble(x, y)
        history.append(out[name].item())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert all(torch.isfinite(torch.tensor(history)))

    # the loss is the one member 0 alone would give (same student, same adapter), not member 1's
    def alone(teacher, layer):
        method = build_method(name, {"teacher_layer": layer}, 4.0)
        distiller = Distiller(teacher=teacher, student=student, methods=[(method, 1.0)])
        distiller.setup_methods(x[:2], len(x))
        if name == "fitnets":
            method.regressor = on_ensemble.methods[0].regressor
        distiller.eval()
        return distiller(x, y)[name].item()

    on_ensemble.eval()
    value = on_ensemble(x, y)[name].item()
    assert value == pytest.approx(alone(teachers[0], "features"), rel=1e-5)
    if name == "pkt":  # fitnets' regressor only fits member 0's shape
        assert value != pytest.approx(alone(teachers[1], "layer3"), rel=1e-3)


def test_teacher_layer_can_name_another_member():
    ensemble = TeacherEnsemble(members())
    method = build_method("pkt", {"teacher_layer": "teachers.1.layer3"}, 4.0)
    distiller = Distiller(teacher=ensemble, student=create_model("cnn-simple", (1, 8, 8), 10, widths=[4, 8]),
                          methods=[(method, 1.0)])
    x = torch.randn(8, 1, 8, 8)
    distiller.setup_methods(x[:2], 8)
    assert torch.isfinite(distiller(x, torch.randint(0, 10, (8,)))["pkt"])


def test_multi_teacher_scheme_runs_with_fitnets(tmp_path):
    cfg = parse_config({
        "data": {"dataset": "digits", "limit_train": 120, "limit_test": 40},
        "teacher": {"model": "cnn-simple", "options": {"widths": [4, 8]}},
        "student": {"model": "cnn-simple", "options": {"widths": [2, 4]}},
        "teacher_train": {"epochs": 1, "progress": False},
        "train": {"epochs": 1, "progress": False},
        "distill": {"methods": [{"name": "kd"}, {"name": "fitnets"}],
                    "scheme": {"name": "multi-teacher", "options": {"teachers": [
                        {"model": "cnn-simple", "options": {"widths": [4, 8]}}, {"model": "mlp-simple"}]}}},
        "output_dir": str(tmp_path),
    })
    result = run_experiment(cfg)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
