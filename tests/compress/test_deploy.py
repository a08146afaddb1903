"""A student deploys with its preprocessing: the input spec in checkpoints and exports, and kdistill predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from kdistill.cli.main import main
from kdistill.compress.export import export_model, read_deployed_spec
from kdistill.config import TrainConfig, parse_config
from kdistill.data import InputSpec, input_spec, load_dataset
from kdistill.distiller import Supervised
from kdistill.errors import CheckpointError
from kdistill.experiment import load_model, train_model
from kdistill.models import create_model
from kdistill.train import fit, load_weights, save_checkpoint

pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

QUICK = TrainConfig(epochs=3, batch_size=32, progress=False, optimizer={"name": "adam", "lr": 0.01})


def _image_folder(root, per_class=(12, 4), classes=("zero", "one", "two")):
    """PNG digits at 16x16 in train/<class>/ and test/<class>/ (the loader resizes them to 8x8)."""
    digits = load_dataset("digits", normalize=False)
    for label, name in enumerate(classes):
        images = digits.x_train[digits.y_train == label][: sum(per_class)]
        for i, image in enumerate(images):
            split = "train" if i < per_class[0] else "test"
            (root / split / name).mkdir(parents=True, exist_ok=True)
            pixels = (image[0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).resize((16, 16)).save(root / split / name / f"{i:02d}.png")
    return root


def test_predict_on_png_files_gives_the_pytorch_models_classes(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    cfg = parse_config({"data": {"dataset": "image-folder", "options": {"path": str(folder), "image_size": 8}},
                        "student": {"model": "mlp-simple"}, "train": QUICK.model_dump(),
                        "output_dir": str(tmp_path / "runs")})
    result = train_model(cfg, "student")
    onnx = tmp_path / "student.onnx"
    assert main(["export", str(result.checkpoint), "--format", "onnx", "-o", str(onnx)]) == 0
    files = sorted((folder / "test").rglob("*.png"))
    out = tmp_path / "predictions.json"
    assert main(["predict", str(onnx), *map(str, files), "-o", str(out), "--top-k", "3"]) == 0

    # the library's own preprocessing of the same files: the loader's test split, in file order
    data = load_dataset("image-folder", path=str(folder), image_size=8)
    model, _ = load_model(result.checkpoint)
    with torch.no_grad():
        expected = torch.softmax(model(data.x_test), dim=1).numpy()
    rows = json.loads(out.read_text())
    assert [r["input"] for r in rows] == [str(f) for f in files]
    assert [r["top"][0]["class"] for r in rows] == [data.class_names[i] for i in expected.argmax(1)]
    got = [r["top"][0]["probability"] for r in rows]
    assert np.allclose(got, expected.max(1), atol=1e-4)
    assert len(rows[0]["top"]) == 3

    # printed: one line per file, class names and probabilities
    assert main(["predict", str(onnx), str(files[0])]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{files[0]}: {data.class_names[expected[0].argmax()]} (")


def _table(path, rows, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -50.0]
    label = np.where(x[:, 0] + x[:, 1] / 10 > 0.5, "yes", "no")
    lines = ["height,label,weight,age"] + [f"{a:.4f},{y},{b:.4f},{c:.4f}" for (a, b, c), y in zip(x, label)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_predict_on_csv_rows_gives_the_pytorch_models_classes(tmp_path):
    """A checkpoint written by Python fit() carries the table's scaler and column names."""
    train_csv = _table(tmp_path / "train.csv", 80)
    new = _table(tmp_path / "new.csv", 9, seed=1)
    # the library's preprocessing of the new rows: the test split of a table with its own test file
    data = load_dataset("csv", path=str(train_csv), test_path=str(new))
    assert data.feature_names == ["height", "weight", "age"]
    model = create_model("mlp-simple", data.input_shape, data.num_classes)
    history = fit(Supervised(model), data, QUICK, out_dir=tmp_path / "run")
    onnx = tmp_path / "table.onnx"
    assert main(["export", str(history.best_path), "--format", "onnx", "-o", str(onnx)]) == 0

    prepared = data
    trained = load_model(history.best_path)[0]
    with torch.no_grad():
        expected = torch.softmax(trained(prepared.x_test), dim=1).numpy()
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(onnx), str(new), "-o", str(out), "-k", "1"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "input,class_1,probability_1"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == [f"{new}:{i}" for i in range(1, 10)]
    assert [r[1] for r in rows] == [prepared.class_names[i] for i in expected.argmax(1)]
    assert np.allclose([float(r[2]) for r in rows], expected.max(1), atol=1e-4)

    # columns are read by name: another order and an extra column give the same answer
    header, *body = new.read_text().splitlines()
    order = [3, 1, 0, 2]  # age, label, height, weight
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join(",".join(line.split(",")[i] for i in order) + ",x"
                                   for line in [header, *body]) + "\n")
    assert main(["predict", str(onnx), str(shuffled), "-o", str(tmp_path / "again.csv"), "-k", "1"]) == 0
    again = [line.split(",")[1:] for line in (tmp_path / "again.csv").read_text().splitlines()[1:]]
    assert again == [r[1:] for r in rows]


def test_every_export_format_carries_the_input_spec(tmp_path):
    data = load_dataset("digits").subset(100, 20)
    model = create_model("mlp-simple", data.input_shape, 10)
    history = fit(Supervised(model), data, TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    expected = input_spec(data)
    assert expected.layout == "NCHW" and expected.mean == data.mean and expected.class_names[3] == "3"
    for fmt in ("onnx", "exported-program", "safetensors"):
        result = export_model(history.best_path, fmt)
        spec, model_spec = read_deployed_spec(result.path)
        assert spec == expected, fmt
        assert model_spec["model"] == "mlp-simple"
    # the ONNX file's metadata is plain metadata_props, readable without kdistill
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "best-export.onnx")).metadata_props}
    assert json.loads(props["kdistill.input_spec"])["std"] == list(data.std)
    # and the .pt2 archive's extra file through torch.export.load
    extra = {"kdistill_input_spec.json": ""}
    torch.export.load(str(tmp_path / "best-export.pt2"), extra_files=extra)
    assert json.loads(extra["kdistill_input_spec.json"])["shape"] == [1, 8, 8]


def test_bare_safetensors_export_loads_into_create_model(tmp_path):
    data = load_dataset("digits").subset(100, 20)
    model = create_model("cnn-simple", data.input_shape, 10)
    history = fit(Supervised(model), data, TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    path = export_model(history.best_path, "safetensors", tmp_path / "student.safetensors").path
    fresh = create_model("cnn-simple", (1, 8, 8), 10)
    fresh.load_state_dict(load_file(str(path)))  # no prefix to strip
    trained = load_model(history.best_path)[0]
    with torch.no_grad():
        assert torch.equal(fresh.eval()(data.x_test), trained(data.x_test))
    # and kdistill reads it back too
    assert main(["evaluate", str(path), "--json"]) == 0


def test_python_fit_checkpoints_evaluate_and_export_from_the_cli(tmp_path, capsys):
    data = load_dataset("digits").subset(100, 20)
    model = create_model("mlp-simple", data.input_shape, 10, hidden=[16])
    history = fit(Supervised(model), data, TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    assert main(["evaluate", str(history.best_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 360  # the recorded data set, reloaded whole
    assert main(["export", str(history.best_path), "--format", "onnx"]) == 0


class OwnNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.body(x)


def test_a_users_own_module_gets_a_documented_way_back(tmp_path, capsys):
    data = load_dataset("digits").subset(100, 20)
    history = fit(Supervised(OwnNet()), data, TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    assert main(["evaluate", str(history.best_path)]) == 2
    err = capsys.readouterr().err
    assert "kdistill.train.load_weights(module, path)" in err and "register_model" in err
    loaded = load_weights(OwnNet(), history.best_path)
    assert not loaded.training


def test_a_mismatch_lists_the_tensors_that_do_not_fit(tmp_path):
    small = create_model("mlp-simple", (1, 8, 8), 10, hidden=[16])
    path = save_checkpoint(tmp_path / "c.safetensors", {"model": small}, {})
    other = create_model("mlp-simple", (1, 8, 8), 10, hidden=[32, 32])
    with pytest.raises(CheckpointError) as caught:
        load_weights(other, path)
    message = str(caught.value)
    assert "missing:" in message and "of another shape:" in message
    assert "(saved 16x64, model 32x64)" in message
    assert "Error(s) in loading" not in message and len(message) < 1000


def test_a_malformed_input_spec_is_refused_by_name():
    good = {"shape": [3], "layout": "features", "mean": [0.0, 1.0, 2.0], "std": [1.0, 1.0, 1.0],
            "feature_names": ["a", "b", "c"]}
    assert InputSpec.from_dict(good, "x").feature_names == ("a", "b", "c")
    for field, value in (("std", [1.0, 0.0, 1.0]), ("feature_names", ["a"]), ("layout", "NHWC"),
                         ("mean", [0.0, "1", 2.0]), ("shape", [0])):
        with pytest.raises(CheckpointError, match=f"input_spec.{field}"):
            InputSpec.from_dict({**good, field: value}, "x")


def test_a_model_of_other_inputs_is_exported_by_the_exporter_registered_for_it():
    from kdistill.compress.export import export_program, model_inputs
    from kdistill.registry import EXPORTERS

    class OwnInputs(nn.Linear):
        pass

    exported = []

    class OwnExporter:
        @staticmethod
        def matches(model):
            return isinstance(model, OwnInputs)

        @staticmethod
        def export_program(model):
            exported.append(model)
            return "program"

    EXPORTERS.register("test-own-inputs")(OwnExporter)
    try:
        assert model_inputs(nn.Linear(2, 2)) is None  # one float input: the built-in path
        model = OwnInputs(2, 2)
        assert model_inputs(model) is OwnExporter
        assert export_program(model, (2,)) == "program" and exported == [model]
        assert model_inputs(nn.Linear(2, 2)) is None
    finally:
        EXPORTERS._entries.pop("test-own-inputs")  # other tests see the built-in registry
    assert "text" in EXPORTERS.names()  # registered by kdistill.text on the first lookup
