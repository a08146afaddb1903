"""``kdistill export`` on text students: ONNX and exported-program files, checked on padded ids."""

from __future__ import annotations

import pytest
import torch

from kdistill.cli.main import main
from kdistill.models import create_model
from kdistill.text.deploy import padded_example, reference_logits
from kdistill.train.checkpoint import save_checkpoint

STUDENTS = {
    "hf-classifier": {},
    "tiny-transformer": {"layers": 2, "hidden": 16, "heads": 2, "embedding_dim": 8},
    "text-cnn": {"channels": 4, "embedding_dim": 8},
}


def checkpoint(tmp_path, tiny_hf_dir, name, options):
    key = "pretrained" if name == "hf-classifier" else "tokenizer"
    torch.manual_seed(0)
    model = create_model(name, (16,), 2, **{key: str(tiny_hf_dir)}, **options).eval()
    spec = {"model": name, "options": model.rebuild_options, "input_shape": [16], "num_classes": 2,
            "dataset": "sst2"}
    adapter = torch.nn.Linear(4, 4)  # a distillation adapter: must not reach the export
    path = save_checkpoint(tmp_path / "best.safetensors", {"model": model, "methods": adapter},
                           {"role": "student", "model_spec": spec})
    return model, path


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_cli_exports_text_students(tmp_path, tiny_hf_dir, capsys, name):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export is checked with kdistill[deploy]")
    model, path = checkpoint(tmp_path, tiny_hf_dir, name, STUDENTS[name])
    ids, mask = padded_example(model, n=5, seed=3)  # other rows than the export's own check
    expected = reference_logits(model, ids, mask)

    assert main(["export", str(path), "--format", "onnx", "-o", str(tmp_path / "s.onnx")]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)

    if name == "hf-classifier":
        return  # one program suffices: torch.export of a BERT takes a few seconds
    assert main(["export", str(path), "-f", "exported-program", "-o", str(tmp_path / "s.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "s.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(program(ids[:, :11], mask[:, :11]),
                                   reference_logits(model, ids[:, :11], mask[:, :11]), atol=1e-5, rtol=1e-5)


def test_bilstm_onnx_notes_unpadded_rows_and_program_is_refused(tmp_path, tiny_hf_dir, capsys):
    pytest.importorskip("onnxruntime", reason="ONNX export is checked with kdistill[deploy]")
    _, path = checkpoint(tmp_path, tiny_hf_dir, "bilstm", {"hidden": 8, "embedding_dim": 8})
    assert main(["export", str(path), "-f", "onnx"]) == 0
    assert "unpadded rows" in capsys.readouterr().out
    # torch.export cannot trace packed sequences: a clear error, exit 2, no traceback
    assert main(["export", str(path), "-f", "exported-program"]) == 2
    err = capsys.readouterr().err
    assert "--format onnx" in err and "Traceback" not in err
