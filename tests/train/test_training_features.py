"""Gradient accumulation, the student's EMA, early stopping, parameter groups, fp16, top-5."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from kdistill.config import OptimizerConfig, TrainConfig
from kdistill.data import DataSplits
from kdistill.distiller import Supervised
from kdistill.errors import ConfigError
from kdistill.eval import evaluate_model, top5_accuracy
from kdistill.train import fit
from kdistill.train.optim import build_optimizer, parameter_groups
from kdistill.train.precision import autocast_context, grad_scaler


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def splits(n=100):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=gen)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return DataSplits("toy", x, y, x[:20], y[:20], 4, (6,))


def cfg(**kw):
    base = {"epochs": 3, "batch_size": 32, "progress": False, "device": "cpu", "val_fraction": 0.1,
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}}
    return TrainConfig.model_validate({**base, **kw})


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_k_micro_batches_equal_one_batch(loader):
    # 90 training samples: groups of 32 = 4 x 8, and a last group of 26 (3 full micro-batches and one of 2)
    data = splits()
    one, accumulated = net(), net()
    h1 = fit(Supervised(one), data, cfg(batch_size=32), loader=loader, workers=0)
    h4 = fit(Supervised(accumulated), data, cfg(batch_size=8, accumulate=4), loader=loader, workers=0)
    for a, b in zip(one.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for r1, r4 in zip(h1.epochs, h4.epochs, strict=True):
        assert r4["loss"] == pytest.approx(r1["loss"], rel=1e-5)
        assert r4["lr"] == pytest.approx(r1["lr"])
        assert r4["val_score"] == r1["val_score"]
    # and accumulation is not a no-op: one step per micro-batch gives other weights
    plain = net()
    fit(Supervised(plain), data, cfg(batch_size=8), loader=loader, workers=0)
    assert not torch.allclose(plain[0].weight, one[0].weight, atol=1e-4)


def test_the_ema_is_validated_saved_loaded_and_resumed(tmp_path):
    from kdistill.experiment.saved import load_model
    from kdistill.train.checkpoint import load_into, read_checkpoint, weights_prefix

    data = splits()
    model = net()
    history = fit(Supervised(model), data, cfg(epochs=2, ema=0.5), out_dir=tmp_path)
    record = history.epochs[-1]
    assert "val_score_student" in record and "val_score" in record
    tensors = load_file(tmp_path / "last.safetensors")
    assert int(tensors["ema.n_averaged"]) == 2 * 3  # one update per optimiser step, 3 steps an epoch
    ema_weight = tensors["ema.module.0.weight"]
    assert not torch.equal(ema_weight, tensors["model.0.weight"])  # the average lags the raw weights
    loaded, _ = read_checkpoint(tmp_path / "last.safetensors")
    assert weights_prefix(loaded, {}) == "ema.module"
    fresh = net(seed=5)
    load_into(fresh, loaded, weights_prefix(loaded, {}))
    torch.testing.assert_close(fresh[0].weight, ema_weight)
    # a resumed run continues the same average
    resumed = fit(Supervised(net(seed=5)), data, cfg(epochs=3, ema=0.5), out_dir=tmp_path,
                  resume=tmp_path / "last.safetensors")
    assert [r["epoch"] for r in resumed.epochs] == [0, 1, 2]
    assert int(load_file(tmp_path / "last.safetensors")["ema.n_averaged"]) == 9
    # load_model (evaluate, export) rebuilds the EMA weights, which are what the run keeps
    from kdistill.config import ModelConfig
    from kdistill.experiment.records import model_spec
    from kdistill.models import create_model

    spec_model = ModelConfig(model="mlp-simple", options={"hidden": [5]})
    toy = DataSplits("toy", torch.randn(8, 6), torch.arange(8) % 4, torch.randn(4, 6), torch.arange(4), 4, (6,))
    student = create_model("mlp-simple", (6,), 4, hidden=[5])
    fit(Supervised(student), toy, cfg(epochs=1, ema=0.9, batch_size=4), out_dir=tmp_path / "zoo",
        metadata={"model_spec": model_spec(spec_model, toy)})
    rebuilt, _ = load_model(tmp_path / "zoo" / "last.safetensors")
    saved = load_file(tmp_path / "zoo" / "last.safetensors")
    first = next(k for k in saved if k.startswith("ema.module.") and k.endswith("weight"))
    torch.testing.assert_close(rebuilt.state_dict()[first.removeprefix("ema.module.")], saved[first])


def test_patience_stops_when_the_validation_score_stops_improving(tmp_path):
    class Worsening(Supervised):
        def validation_score(self, x, y):
            self.calls = getattr(self, "calls", 0) + 1
            return 1.0 if self.calls == 1 else 0.5  # best at epoch 0, never better again

    history = fit(Worsening(net()), splits(), cfg(epochs=10, patience=2), out_dir=tmp_path)
    assert [r["epoch"] for r in history.epochs] == [0, 1, 2] and history.stopped_early
    assert history.best_epoch == 0
    from kdistill.train.checkpoint import read_checkpoint_metadata

    assert read_checkpoint_metadata(tmp_path / "last.safetensors")["stopped_early"] is True


def test_no_weight_decay_on_biases_and_norms_unless_switched_on():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2))
    groups = parameter_groups({"model": model}, 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert len(groups[1]["params"]) == 6  # conv and linear biases, the two norms' scales and shifts
    single = parameter_groups({"model": model}, 0.05, decay_bias_and_norm=True)
    assert len(single) == 1 and len(single[0]["params"]) == 8
    optimizer = build_optimizer({"model": model}, OptimizerConfig(name="adamw", weight_decay=0.05))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


def test_fp16_needs_cuda_and_brings_a_gradient_scaler():
    cpu = torch.device("cpu")
    assert grad_scaler(cpu, "auto") is None and grad_scaler(cpu, "bf16") is None
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        grad_scaler(cpu, "fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        fit(Supervised(net()), splits(), cfg(amp="fp16"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_autocasts_to_half_and_scales_gradients():
    cuda = torch.device("cuda")
    scaler = grad_scaler(cuda, "fp16")
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    with autocast_context(cuda, "fp16"):
        assert torch.get_autocast_dtype("cuda") == torch.float16
        out = nn.Linear(4, 4).to(cuda)(torch.randn(2, 4, device=cuda))
    assert out.dtype == torch.float16
    history = fit(Supervised(net()), splits(), cfg(amp="fp16", device="cuda", epochs=1))
    assert history.epochs[0]["loss"] == history.epochs[0]["loss"]  # finite


def test_top5_accuracy_where_there_are_more_than_five_classes():
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4, 0], [0, 1, 2, 3, 4, 5, 9]])
    assert top5_accuracy(logits, torch.tensor([4, 0])) == 0.5
    data = DataSplits("seven", torch.randn(8, 6), torch.arange(8) % 7, torch.randn(7, 6), torch.arange(7), 7, (6,))
    metrics = evaluate_model(nn.Linear(6, 7), data, latency=False)
    assert 0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1
    assert "top5_accuracy" not in evaluate_model(net(), splits(), latency=False)  # 4 classes: always 1


def test_streamed_test_splits_are_evaluated_batch_by_batch():
    from kdistill.data.streaming import StreamSplits

    data = splits()
    streamed = StreamSplits("toy", TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_test, data.y_test),
                            4, (6,))
    model = net()
    a = evaluate_model(model, data, latency=False)
    b = evaluate_model(model, streamed, latency=False)
    assert a == b


def test_streamed_test_splits_read_by_workers_come_back_whole_and_in_order():
    from kdistill.data.streaming import StreamSplits
    from kdistill.eval import test_predictions

    data = splits()
    streamed = StreamSplits("toy", TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_test, data.y_test),
                            4, (6,))
    model = net()
    # a batch size that does not divide the split, so the last batch is short
    logits, targets = test_predictions(model, streamed, batch_size=7, workers=2)
    assert torch.equal(targets, data.y_test)
    assert torch.allclose(logits, model.eval()(data.x_test).detach(), atol=1e-6)
    assert evaluate_model(model, streamed, latency=False, workers=2) == evaluate_model(model, data, latency=False)


def test_a_damaged_test_image_read_by_an_evaluation_worker_is_reported_in_words():
    from kdistill.data.streaming import StreamSplits
    from kdistill.errors import DataError
    from kdistill.eval import test_predictions

    class Damaged(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            if i == 4:
                raise DataError("Cannot read image photos/test/cat/4.jpg: the file is damaged.")
            return torch.zeros(6), 0

    data = splits()
    streamed = StreamSplits("toy", TensorDataset(data.x_train, data.y_train), Damaged(), 4, (6,))
    for workers in (0, 1):
        with pytest.raises(DataError) as raised:
            test_predictions(net(), streamed, batch_size=2, workers=workers)
        assert str(raised.value) == "Cannot read image photos/test/cat/4.jpg: the file is damaged."


def test_the_heap_is_trimmed_before_evaluation_workers_are_forked_and_only_then(monkeypatch):
    import kdistill.eval as evaluation
    import kdistill.workers
    from kdistill.data.streaming import StreamSplits

    calls = []
    monkeypatch.setattr(kdistill.workers, "release_free_memory", lambda: calls.append("trim"))
    data = splits()
    streamed = StreamSplits("toy", TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_test, data.y_test),
                            4, (6,))
    model = net()
    evaluation.test_predictions(model, data, workers=2)  # held whole: no DataLoader, nothing forked
    evaluation.test_predictions(model, streamed, workers=0)  # read in this process
    assert calls == []
    evaluation.test_predictions(model, streamed, workers=1)
    assert calls == ["trim"]
