"""Hidden-state and attention-map distillation, and the whole CLI path on a tiny transformer."""

from __future__ import annotations

import pytest
import torch

from kdistill.distiller import Distiller, build_method
from kdistill.errors import ConfigError
from kdistill.methods.attention_maps import AttentionMapMatching, attention_probs
from kdistill.methods.hidden_states import HiddenStateMatching
from kdistill.models import create_model


def _batch(tiny_hf_dir, tiny_tsv):
    from kdistill.data import load_dataset

    data = load_dataset("text-csv", path=str(tiny_tsv), tokenizer=str(tiny_hf_dir), max_length=12,
                        test_fraction=0.25)
    return data.x_train[:16], data.y_train[:16]


def test_attention_recomputed_from_query_and_key_equals_eager_attention(tiny_hf_dir, tiny_tsv):
    import transformers

    ids, _ = _batch(tiny_hf_dir, tiny_tsv)
    model = transformers.AutoModel.from_pretrained(str(tiny_hf_dir), attn_implementation="eager").eval()
    captured = {}
    layer = model.encoder.layer[2].attention.self
    layer.query.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o))
    layer.key.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o))
    mask = ids != 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask.long(), output_attentions=True)
    ours = attention_probs(captured["q"], captured["k"], 4, mask)
    real = mask[:, None, :, None]  # padded query rows are irrelevant
    torch.testing.assert_close(ours * real, out.attentions[2] * real, atol=1e-5, rtol=1e-4)


def test_kd_hidden_and_attention_losses_fall(tiny_hf_dir, tiny_tsv):
    torch.manual_seed(0)
    ids, labels = _batch(tiny_hf_dir, tiny_tsv)
    teacher = create_model("hf-classifier", (12,), 2, pretrained=str(tiny_hf_dir))
    with torch.no_grad():  # peaked attention, so its maps are far from a fresh student's uniform ones
        for layer in teacher.backbone.encoder.layer:
            layer.attention.self.query.weight.mul_(20.0)
    # a narrower student with fewer heads: a learned projection and head-averaged maps
    student = create_model("tiny-transformer", (12,), 2, tokenizer=str(tiny_hf_dir), layers=2,
                           hidden=16, heads=2, embedding_dim=8, dropout=0.0)
    layers = {"teacher": [1, 3], "student": [0, 1]}
    methods = [(HiddenStateMatching(layers=layers, loss="mse"), 1.0),
               (AttentionMapMatching(layers=layers), 1.0)]
    distiller = Distiller(teacher=teacher, student=student, alpha=1.0, temperature=2.0, methods=methods)
    distiller.check_compatible(ids[:2])
    distiller.setup_methods(ids[:2], len(ids))
    assert isinstance(distiller.methods[0].projections[0], torch.nn.Linear)
    assert distiller.needs_live_teacher
    params = [p for m in distiller.trainable_modules().values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    history = []
    for _ in range(15):
        losses = distiller(ids, labels)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    for key in ("kd", "hidden", "attention", "loss"):
        assert history[-1][key] < 0.8 * history[0][key], (key, history[0][key], history[-1][key])


def test_layer_maps_are_checked():
    with pytest.raises(ConfigError, match="same length"):
        build_method("hidden-states", {"layers": {"teacher": [1, 3], "student": [0]}}, 2.0)
    with pytest.raises(ConfigError, match="loss must be"):
        build_method("attention-maps", {"loss": "l1"}, 2.0)
    method = build_method("hidden-states", {"layers": {"teacher": [-1, 5], "student": [-1, 2]}}, 2.0)
    assert method.teacher_layers == ("backbone.embeddings", "backbone.encoder.layer.5")


def test_distill_command_end_to_end_and_checkpoint_rebuild(tiny_hf_dir, tiny_tsv, tmp_path):
    import yaml

    from kdistill.cli.main import main
    from kdistill.experiment import load_model

    config = {
        "name": "tiny-text",
        "data": {"dataset": "text-csv", "options": {"path": str(tiny_tsv), "tokenizer": str(tiny_hf_dir),
                                                    "max_length": 12, "test_fraction": 0.25}},
        "teacher": {"model": "hf-classifier", "options": {"pretrained": str(tiny_hf_dir)}},
        "student": {"model": "hf-distil", "options": {"init_from": "teacher"}},
        "distill": {"alpha": 0.5, "temperature": 2.0, "methods": [
            {"name": "hidden-states", "options": {"layers": {"teacher": [1, 3], "student": [0, 1]},
                                                  "loss": "cosine"}},
            {"name": "attention-maps", "weight": 0.5,
             "options": {"layers": {"teacher": [1, 3], "student": [0, 1]}}}]},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False,
                  "val_fraction": 0.2},
    }
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["distill", str(path), "--output-dir", str(out)]) == 0
    student, meta = load_model(out / "student" / "best.safetensors")
    assert meta["model_spec"]["options"]["source_layers"] == [0, 2]
    assert "init_from" not in meta["model_spec"]["options"]  # rebuilt from its config alone
    ids = create_model("hf-classifier", (12,), 2, pretrained=str(tiny_hf_dir)).example_input(3)
    teacher, _ = load_model(out / "teacher" / "best.safetensors")
    with torch.no_grad():
        assert student(ids).shape == teacher(ids).shape == (3, 2)


def test_hf_distil_init_from_a_teacher_checkpoint(tiny_hf_dir, tiny_tsv, tmp_path):
    """``init_from: FILE.safetensors`` is read by the run assembly and handed to the factory; the zoo
    itself never loads a checkpoint (it sits below the loader), and says how to do it from Python."""
    from kdistill.config import ModelConfig
    from kdistill.data import load_dataset
    from kdistill.experiment import build_model, load_model
    from kdistill.experiment.records import model_spec
    from kdistill.train.checkpoint import save_checkpoint

    data = load_dataset("text-csv", path=str(tiny_tsv), tokenizer=str(tiny_hf_dir), max_length=12,
                        test_fraction=0.25)
    teacher_cfg = ModelConfig(model="hf-classifier", options={"pretrained": str(tiny_hf_dir)})
    torch.manual_seed(0)
    teacher = build_model(teacher_cfg, data)
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(path, {"model": teacher}, {"model_spec": model_spec(teacher_cfg, data, teacher)})
    reloaded, _ = load_model(path)

    student = build_model(ModelConfig(model="hf-distil", options={"init_from": str(path)}), data)
    expected = build_model(ModelConfig(model="hf-distil", options={"init_from": "teacher"}), data, teacher=reloaded)
    for (name, ours), (_, theirs) in zip(student.state_dict().items(), expected.state_dict().items(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)
    with pytest.raises(ConfigError, match="teacher_model"):
        create_model("hf-distil", (12,), 2, init_from=str(path))
