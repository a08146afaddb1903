"""DataSplits helpers, on-device batching and jitter."""

import pytest
import torch

from kdistill.data import DataSplits, iterate_batches, jitter, num_batches
from kdistill.errors import DataError


def splits(n_train=50, n_test=20):
    return DataSplits(
        name="toy",
        x_train=torch.arange(n_train, dtype=torch.float32)[:, None],
        y_train=torch.arange(n_train) % 3,
        x_test=torch.zeros(n_test, 1),
        y_test=torch.zeros(n_test, dtype=torch.int64),
        num_classes=3,
        input_shape=[1],
    )


def test_splits_validation_and_helpers():
    data = splits()
    assert data.input_shape == (1,) and data.task == "classification"
    assert data.to("cpu").x_train.device.type == "cpu"
    sub = data.subset(10, 5)
    assert (sub.num_train, sub.num_test) == (10, 5)
    assert torch.equal(sub.x_train, data.subset(10, 5).x_train)  # deterministic
    assert data.subset(None, 100).num_test == 20
    with pytest.raises(DataError, match="inputs"):
        DataSplits(
            "bad", torch.zeros(3, 1), torch.zeros(2), torch.zeros(1, 1), torch.zeros(1), 2, (1,)
        )
    with pytest.raises(DataError, match="sample shape"):
        DataSplits(
            "bad", torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 2), torch.zeros(1), 2, (1,)
        )


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n, bs, drop_last", [(50, 8, False), (50, 8, True), (48, 8, False)])
def test_batches_cover_each_index_once(n, bs, drop_last, shuffle):
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = torch.arange(n)
    seen = []
    batches = list(
        iterate_batches(
            x,
            y,
            bs,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(0),
            drop_last=drop_last,
        )
    )
    assert len(batches) == num_batches(n, bs, drop_last)
    for xb, yb, idx in batches:
        assert torch.equal(xb[:, 0].long(), idx) and torch.equal(yb, idx)
        seen += idx.tolist()
    expected = n - n % bs if drop_last else n
    assert len(seen) == len(set(seen)) == expected
    if not drop_last:
        assert sorted(seen) == list(range(n))


def test_batches_seeded_shuffle():
    x, y = torch.zeros(30, 1), torch.zeros(30)

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([idx for _, _, idx in iterate_batches(x, y, 7, generator=gen)])

    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    assert not torch.equal(order(1), torch.arange(30))


def test_num_batches():
    assert num_batches(10, 3) == 4 and num_batches(10, 3, drop_last=True) == 3
    with pytest.raises(ValueError):
        num_batches(10, 0)


def test_jitter_identity_at_zero():
    x = torch.randn(4, 1, 5, 5)
    assert torch.equal(jitter(x, 0), x)


def test_jitter_shifts_exactly():
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5).repeat(64, 2, 1, 1)
    out = jitter(x, 2, generator=torch.Generator().manual_seed(0), fill=-1.0)
    for img in out:
        # Each output must be x shifted by some (dy, dx) in -2..2 with -1 fill.
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.full((2, 5, 5), -1.0)
                ys, yd = slice(max(0, -dy), 5 - max(0, dy)), slice(max(0, dy), 5 - max(0, -dy))
                xs, xd = slice(max(0, -dx), 5 - max(0, dx)), slice(max(0, dx), 5 - max(0, -dx))
                ref[:, yd, xd] = x[0][:, ys, xs]
                if torch.equal(img, ref):
                    matches.append((dy, dx))
        assert len(matches) == 1
    assert len({tuple(o.flatten().tolist()) for o in out}) > 10  # shifts differ per sample


def test_jitter_known_shift_and_channel_fill(monkeypatch):
    x = torch.zeros(1, 2, 3, 3)
    x[0, :, 1, 1] = 5.0
    # Force the shift to (dy, dx) = (+1, -1) to check the direction convention.
    monkeypatch.setattr(torch, "randint", lambda *a, **k: torch.tensor([[1], [-1]]))
    out = jitter(x, 1, fill=[7.0, 8.0])
    assert out[0, 0, 2, 0] == 5.0 and out[0, 1, 2, 0] == 5.0
    assert out[0, 0, 0, 0] == 7.0 and out[0, 1, 0, 2] == 8.0  # shifted-in border


def test_jitter_deterministic_and_rejects_tables():
    x = torch.randn(16, 1, 8, 8)
    a = jitter(x, 2, torch.Generator().manual_seed(3))
    b = jitter(x, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    with pytest.raises(DataError, match="N, C, H, W"):
        jitter(torch.zeros(4, 10), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_data_with_cpu_generator():
    x = torch.arange(20, dtype=torch.float32, device="cuda")[:, None]
    idx = torch.cat(
        [i for _, _, i in iterate_batches(x, None, 6, generator=torch.Generator().manual_seed(0))]
    )
    assert idx.device.type == "cuda" and sorted(idx.tolist()) == list(range(20))
    img = torch.randn(4, 1, 6, 6, device="cuda")
    assert jitter(img, 2, torch.Generator().manual_seed(0)).device.type == "cuda"
