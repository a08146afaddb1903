"""Parameter counts, size on disk, latency and the evaluate_model summary."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from kdistill.eval import (
    cpu_latency,
    evaluate_model,
    format_bytes,
    parameter_count,
    size_on_disk,
)
from kdistill.models import create_model


def test_parameter_count() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    assert parameter_count(model) == 4 * 3 + 3 + 3 * 2 + 2
    model[0].requires_grad_(False)
    assert parameter_count(model, trainable_only=True) == 3 * 2 + 2


def test_size_on_disk_is_float32_payload_plus_header() -> None:
    model = nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10))
    payload = 4 * parameter_count(model)
    size = size_on_disk(model)
    assert payload < size <= payload + 400


def test_size_on_disk_writes_tied_weights_once() -> None:
    tied = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False))
    tied[1].weight = tied[0].weight
    assert 4 * 64 * 64 < size_on_disk(tied) < 4 * 64 * 64 + 300


def test_size_on_disk_handles_non_contiguous_and_buffers() -> None:
    model = create_model("resnet-simple", (1, 8, 8), 10)
    with torch.no_grad():
        model.fc.weight.set_(model.fc.weight.detach().t().contiguous().t())
    assert not model.fc.weight.is_contiguous()
    assert size_on_disk(model) > 4 * parameter_count(model)


def test_cpu_latency_positive_and_leaves_model_alone() -> None:
    model = create_model("cnn-simple", (1, 8, 8), 10).train()
    result = cpu_latency(model, (1, 8, 8), batch_size=4, warmup=1, repeats=3, threads=1)
    assert set(result) == {"ms_per_batch", "ms_per_sample", "samples_per_s", "p10_ms_per_sample",
                           "p90_ms_per_sample", "iqr_ms_per_sample", "threads"}
    assert all(v > 0 for k, v in result.items() if k != "iqr_ms_per_sample")
    assert result["ms_per_sample"] * 4 == result["ms_per_batch"]
    assert model.training
    assert torch.get_num_threads() >= 1


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(2048) == "2.0 KiB"
    assert format_bytes(int(1.5 * 1024**2)) == "1.5 MiB"


def test_evaluate_model_classification() -> None:
    torch.manual_seed(0)
    data = SimpleNamespace(
        x_test=torch.randn(20, 1, 8, 8),
        y_test=torch.randint(0, 10, (20,)),
        input_shape=(1, 8, 8),
    )
    model = create_model("mlp-simple", (1, 8, 8), 10)
    plain = evaluate_model(model, data, latency=False)
    assert set(plain) == {"accuracy", "top5_accuracy", "errors", "n_test", "params", "size_bytes"}  # 10 classes
    assert plain["n_test"] == 20 and plain["errors"] == round(20 * (1 - plain["accuracy"]))
    assert plain["params"] == 64 * 32 + 32 + 32 * 10 + 10

    teacher_logits = torch.randn(20, 10)
    full = evaluate_model(model, data, teacher_logits)
    assert full["latency_ms"] > 0
    assert 0.0 <= full["agreement"] <= 1.0 and full["kl"] >= 0.0
    own = evaluate_model(model, data, model.eval()(data.x_test).detach(), latency=False)
    assert own["agreement"] == 1.0 and own["kl"] < 1e-9


def test_evaluate_model_regression() -> None:
    data = SimpleNamespace(x_test=torch.randn(8, 5), y_test=torch.randn(8), input_shape=(5,))
    model = create_model("mlp-simple", (5,), 0)
    result = evaluate_model(model, data, torch.zeros(8, 1), latency=False)
    assert result["mse"] >= 0 and result["teacher_mse"] >= 0
    assert "accuracy" not in result


class ThreadRecorder(nn.Module):
    """Records the torch thread count of every timed forward pass (cpu_latency runs under inference_mode)."""

    seen: list[int] = []  # a class attribute, so cpu_latency's deep copy shares it

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if torch.is_inference_mode_enabled():
            ThreadRecorder.seen.append(torch.get_num_threads())
        return self.fc(x.flatten(1))


def test_cpu_latency_reports_median_and_spread() -> None:
    result = cpu_latency(create_model("mlp-simple", (1, 8, 8), 10), (1, 8, 8), warmup=2, repeats=15, threads=1)
    assert {"ms_per_sample", "p10_ms_per_sample", "p90_ms_per_sample", "iqr_ms_per_sample", "threads"} <= set(result)
    assert result["p10_ms_per_sample"] <= result["ms_per_sample"] <= result["p90_ms_per_sample"]
    assert result["iqr_ms_per_sample"] >= 0 and result["threads"] == 1


def test_cpu_latency_pins_threads_and_restores_them() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        ThreadRecorder.seen.clear()
        cpu_latency(ThreadRecorder(), (1, 8, 8), warmup=2, repeats=5, threads=1)
        assert ThreadRecorder.seen == [1] * 7  # warm-up and timed passes, all on one thread
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_evaluate_model_latency_is_pinned_to_one_thread_with_its_spread() -> None:
    data = SimpleNamespace(x_test=torch.randn(6, 1, 8, 8), y_test=torch.randint(0, 10, (6,)), input_shape=(1, 8, 8))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ThreadRecorder.seen.clear()
        result = evaluate_model(ThreadRecorder(), data)
        assert ThreadRecorder.seen and set(ThreadRecorder.seen) == {1}
        assert torch.get_num_threads() == 2
        assert result["latency_threads"] == 1
        assert result["latency_p10_ms"] <= result["latency_ms"] <= result["latency_p90_ms"]
        ThreadRecorder.seen.clear()
        evaluate_model(ThreadRecorder(), data, latency_threads=2)
        assert set(ThreadRecorder.seen) == {2}
    finally:
        torch.set_num_threads(before)
