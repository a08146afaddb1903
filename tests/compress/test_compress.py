"""Quantized, pruned and exported models: saved, reloaded, and measured as the files they are."""

import os

import pytest
import torch

from kdistill.compress.artifact import save_dense
from kdistill.compress.export import export_model
from kdistill.compress.load import load_artifact
from kdistill.compress.prune import (
    magnitude_prune,
    save_sparse,
    structured_prune,
    weight_sparsity,
)
from kdistill.compress.quantize import dynamic_quantize, save_quantized, static_quantize
from kdistill.errors import CheckpointError, ConfigError, ModelError
from kdistill.eval import parameter_count
from kdistill.models import create_model
from kdistill.train.checkpoint import save_checkpoint

SHAPE = (1, 8, 8)


def spec(name, **options):
    return {"model": name, "options": options, "input_shape": list(SHAPE), "num_classes": 10, "dataset": "t"}


def model(name):
    torch.manual_seed(0)
    m = create_model(name, SHAPE, 10).eval()
    # non-trivial BatchNorm statistics, so channel selection errors would show
    for bn in [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return m


X = torch.randn(32, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def onnx():
    """int8 quantization runs in ONNX Runtime (kdistill[deploy])."""
    pytest.importorskip("onnxruntime", reason="int8 quantization needs kdistill[deploy]")
    return pytest.importorskip("onnx", reason="int8 quantization needs kdistill[deploy]")


@torch.no_grad()
def same(a, b, x=X):
    return torch.allclose(a(x), b(x), atol=1e-6)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_quantized_save_reload_and_size(tmp_path, kind, onnx):
    m = model("mlp-medium")
    q = dynamic_quantize(m, SHAPE) if kind == "dynamic" else static_quantize(m, X)
    path = save_quantized(q, tmp_path / "q.safetensors", kind, {"model_spec": spec("mlp-medium")})
    dense = save_dense(m, tmp_path / "d.safetensors", {"model_spec": spec("mlp-medium")})
    back, meta = load_artifact(path)
    assert meta["format"] == f"int8-{kind}" and meta["engine"] == "onnxruntime"
    assert same(q, back)
    with torch.no_grad():
        diff = (q(X) - m(X)).abs().max()
    assert 0 < diff < 0.1  # int8 is close to float, not equal
    # int8 weights: about a quarter of the float32 file
    assert os.path.getsize(path) < 0.35 * os.path.getsize(dense)
    ops = {node.op_type for node in onnx.load_from_string(back.onnx_model).graph.node}
    assert ("MatMulInteger" in ops) if kind == "dynamic" else ("QuantizeLinear" in ops)


def test_static_quantization_of_conv_nets(tmp_path, onnx):
    for name in ("cnn-simple", "resnet-simple"):
        m = model(name)
        q = static_quantize(m, X)
        path = save_quantized(q, tmp_path / f"{name}.safetensors", "static", {"model_spec": spec(name)})
        back = load_artifact(path)[0]
        assert same(q, back)
        with torch.no_grad():  # the calibrated int8 net still predicts what the float one does
            assert (back(X).argmax(1) == m(X).argmax(1)).float().mean() > 0.8
    # dynamic quantization leaves convolutions in float32: only the classifier shrinks
    q = dynamic_quantize(model("cnn-simple"), SHAPE)
    ops = {node.op_type for node in onnx.load_from_string(q.onnx_model).graph.node}
    assert "Conv" in ops and "ConvInteger" not in ops


def test_quantized_model_copies_and_refuses_old_files(tmp_path, onnx):
    import copy

    q = dynamic_quantize(model("mlp-simple"), SHAPE)
    assert same(q, copy.deepcopy(q))  # measuring latency deep-copies the model
    with pytest.raises(ModelError):
        save_quantized(q, tmp_path / "x.safetensors", "static", {"model_spec": spec("mlp-simple")})
    from kdistill.compress.artifact import write_artifact

    old = write_artifact(tmp_path / "old.safetensors", {"w.__int": torch.zeros(2, dtype=torch.int8)},
                         {"model_spec": spec("mlp-simple"), "format": "int8-dynamic", "quant_state": {}})
    with pytest.raises(CheckpointError, match="quantize the float model again"):
        load_artifact(old)


def test_unstructured_pruning_sparse_file(tmp_path):
    m = model("mlp-medium")
    p = magnitude_prune(m, 0.9)
    assert weight_sparsity(p) == pytest.approx(0.9, abs=0.01)
    assert weight_sparsity(m) < 0.01  # the input is untouched
    sparse = save_sparse(p, tmp_path / "s.safetensors", {"model_spec": spec("mlp-medium")})
    dense = save_dense(p, tmp_path / "d.safetensors", {"model_spec": spec("mlp-medium")})
    back, _ = load_artifact(sparse)
    assert same(p, back)
    # 1 bit mask + 10% of the values: well under a fifth of the dense file
    assert os.path.getsize(sparse) < 0.2 * os.path.getsize(dense)


@pytest.mark.parametrize("name", ["mlp-medium", "cnn-medium", "resnet-medium"])
def test_structured_pruning_rebuilds_a_smaller_model(tmp_path, name):
    m = model(name)
    # keeping every channel must reproduce the model exactly (checks the index bookkeeping)
    full, _ = structured_prune(m, 0.0, spec(name))
    assert same(m, full)
    small, small_spec = structured_prune(m, 0.5, spec(name))
    assert parameter_count(small) < 0.4 * parameter_count(m)
    path = save_dense(small, tmp_path / "p.safetensors", {"model_spec": small_spec})
    big = save_dense(m, tmp_path / "m.safetensors", {"model_spec": spec(name)})
    assert os.path.getsize(path) < 0.4 * os.path.getsize(big)
    back, meta = load_artifact(path)
    assert same(small, back)
    assert meta["model_spec"]["options"] == small_spec["options"]


def test_wrong_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError):
        load_artifact(bad)


def _student_checkpoint(tmp_path):
    student = model("cnn-simple")
    adapter = torch.nn.Linear(4, 4)
    path = save_checkpoint(tmp_path / "best.safetensors", {"model": student, "methods": adapter},
                           {"model_spec": spec("cnn-simple")})
    return student, path


def test_onnx_export_round_trip(tmp_path):
    pytest.importorskip("onnxruntime")
    from kdistill.compress.export import ort_session

    student, path = _student_checkpoint(tmp_path)
    result = export_model(path, "onnx", tmp_path / "s.onnx")
    assert result.size_bytes == os.path.getsize(tmp_path / "s.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    x = torch.randn(5, *SHAPE)  # a batch size the export never saw
    got = ort_session(tmp_path / "s.onnx").run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), student(x), atol=1e-4)


def test_exported_program_and_safetensors_export_strip_adapters(tmp_path):
    student, path = _student_checkpoint(tmp_path)
    ep = export_model(path, "exported-program", tmp_path / "s.pt2")
    assert ep.max_abs_diff is not None and ep.max_abs_diff < 1e-5
    assert ep.size_bytes == os.path.getsize(tmp_path / "s.pt2")
    # the file runs with plain PyTorch, at a batch size the export never saw
    program = torch.export.load(str(tmp_path / "s.pt2")).module()
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(program(x), student(x), atol=1e-5)
    assert not any(k.startswith("methods") for k in program.state_dict())
    st = export_model(path, "safetensors", tmp_path / "s.safetensors")
    from safetensors.torch import load_file

    # the model's own state dict: create_model(...) loads it without renaming
    bare = create_model("cnn-simple", SHAPE, 10).eval()
    bare.load_state_dict(load_file(str(st.path)))
    assert same(student, bare)
    assert same(student, load_artifact(st.path)[0])
    with pytest.raises(ConfigError):
        export_model(path, "tflite")


def test_torchscript_is_refused_with_the_replacement(tmp_path, capsys):
    from kdistill.cli.main import main

    _, path = _student_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="exported-program"):
        export_model(path, "torchscript")
    assert main(["export", str(path), "--format", "torchscript"]) == 2
    assert "--format exported-program" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pt"))


def test_cli_export_exported_program(tmp_path, capsys):
    from kdistill.cli.main import main

    student, path = _student_checkpoint(tmp_path)
    assert main(["export", str(path), "-f", "exported-program"]) == 0
    out = tmp_path / "best-export.pt2"
    assert out.is_file() and "exported-program" in capsys.readouterr().out
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(torch.export.load(str(out)).module()(x), student(x), atol=1e-5)


def test_cli_export_and_user_errors(tmp_path, capsys):
    from kdistill.cli.main import main

    _, path = _student_checkpoint(tmp_path)
    assert main(["export", str(path), "--format", "safetensors", "-o", str(tmp_path / "o.safetensors")]) == 0
    assert (tmp_path / "o.safetensors").is_file()
    assert main(["export", str(tmp_path / "missing.safetensors"), "--format", "onnx"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "study.yaml"
    bad.write_text("models: [mlp-simple]\nquantise: {}\n")
    assert main(["study", str(bad)]) == 2
    assert "quantise" in capsys.readouterr().err
