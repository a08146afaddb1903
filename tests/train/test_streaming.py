"""The streaming batch source: a Dataset or DataLoader as training data, indices, the teacher cache."""

import numpy as np
import pytest
import torch
from helpers import write_colour_folder
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from kdistill.config import TrainConfig
from kdistill.data import DataSplits
from kdistill.data.streaming import StreamSplits, split_positions
from kdistill.distiller import Distiller, Supervised
from kdistill.errors import ConfigError, DataError
from kdistill.train import fit


class Numbered(Dataset):
    """Sample i is (i, features of i) with label i % 3: every input says which sample it is."""

    def __init__(self, n: int = 50) -> None:
        gen = torch.Generator().manual_seed(0)
        self.features = torch.randn(n, 3, generator=gen)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.cat([torch.tensor([float(i)]), self.features[i]]), i % 3


class Recording(Supervised):
    """Plain training that notes which samples each batch held, by input and by index."""

    def __init__(self, model):
        super().__init__(model)
        self.seen = []

    def forward(self, inputs, labels, indices=None):
        self.seen.append((inputs[:, 0].long().tolist(), None if indices is None else indices.tolist()))
        return super().forward(inputs, labels, indices)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "progress": False, "device": "cpu", **kw})


def test_a_dataset_streams_and_indices_name_the_samples_under_shuffling():
    data = Numbered(50)
    objective = Recording(net())
    history = fit(objective, data, cfg(val_fraction=0.2), workers=0)
    assert len(history.epochs) == 2 and "val_score" in history.epochs[0]
    train_pos, val_pos = split_positions(50, 0.2, 0)
    assert len(val_pos) == 10
    epochs = [objective.seen[:5], objective.seen[5:]]  # 40 samples in batches of 8
    assert len(objective.seen) == 10
    orders = []
    for batches in epochs:
        order = [i for _, idx in batches for i in idx]
        # every training position exactly once per epoch, and each index names its own sample
        assert sorted(order) == list(range(40))
        for inputs, idx in batches:
            assert inputs == [train_pos[i] for i in idx]
        orders.append(order)
    assert orders[0] != orders[1] and orders[0] != sorted(orders[0])  # shuffled, anew each epoch


def test_a_users_dataloader_is_used_as_it_is():
    loader = DataLoader(Numbered(30), batch_size=10, shuffle=True)
    objective = Recording(net())
    history = fit(objective, loader, cfg())
    assert len(objective.seen) == 6 and all(idx is None for _, idx in objective.seen)
    assert history.epochs[0]["val_score"] == -history.epochs[0]["loss"]  # no validation split to score
    with pytest.raises(ConfigError, match="DataLoader"):
        fit(Recording(net()), loader, cfg(), loader="memory")


def test_bad_samples_and_batches_are_reported_in_words():
    class Bare(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(4)

    with pytest.raises(DataError, match="not an \\(input, target\\) pair"):
        fit(Supervised(net()), Bare(), cfg(val_fraction=0.0), workers=0)
    with pytest.raises(ConfigError, match="data.loader"):
        fit(Supervised(net()), Numbered(10), cfg(), loader="disk")


def test_loader_memory_reads_a_dataset_whole_and_auto_keeps_tensors_in_memory(caplog):
    x, y = torch.randn(40, 4, dtype=torch.float64), torch.arange(40) % 3  # float64 inputs are accepted
    with caplog.at_level("INFO", logger="kdistill.data"):
        fit(Supervised(net()), TensorDataset(x, y), cfg(), loader="memory")
        splits = DataSplits("t", x.float(), y, x[:4].float(), y[:4], 3, (4,))
        fit(Supervised(net()), splits, cfg())
        fit(Supervised(net()), splits, cfg(), loader="stream", workers=0)
    notes = [r.getMessage() for r in caplog.records if r.name == "kdistill.data" and "data loader" in r.getMessage()]
    assert notes[0].startswith("data loader: memory (data.loader: memory)")
    assert notes[1].startswith("data loader: memory (auto:")
    assert notes[2].startswith("data loader: stream")


def test_the_teacher_cache_on_the_streaming_path_is_keyed_by_sample_index(tmp_path):
    data = Numbered(40)
    teacher = net()
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(4, 3))
    distiller = Distiller(teacher=teacher, student=student)
    fit(distiller, StreamSplits("n", data, data, 3, (4,)), cfg(epochs=1), out_dir=tmp_path, workers=0)
    cache = distiller.teacher_cache
    assert cache is not None and cache.storage == "memmap"  # streamed sets cache on disk, in the run folder
    assert (tmp_path / "teacher-cache" / "logits.npy").is_file()
    train_pos, _ = split_positions(40, 0.1, 0)
    idx = torch.tensor([5, 0, 17, 35])
    x = torch.stack([data[train_pos[i]][0] for i in idx])
    logits, _ = cache.lookup(idx)
    torch.testing.assert_close(logits, teacher(x).detach())


def test_image_folder_of_rgb_pngs_streams_end_to_end(tmp_path, caplog):
    pytest.importorskip("PIL.Image")
    from kdistill.data import load_dataset
    from kdistill.data.datasets.image_folder import ImageFolderDataset

    write_colour_folder(tmp_path / "imgs", per_class=6)  # the class is the dominant colour
    with caplog.at_level("INFO", logger="kdistill.data"):
        data = load_dataset("image-folder", path=tmp_path / "imgs", loader="stream", test_fraction=1 / 3)
    assert isinstance(data, StreamSplits) and isinstance(data.train, ImageFolderDataset)
    assert data.input_shape == (3, 12, 16) and data.class_names == ["blue", "green", "red"]
    assert (data.num_train, data.num_test) == (12, 6) and len(data.mean) == 3
    assert any("read as RGB 12x16" in r.getMessage() for r in caplog.records)
    x, y = data.train[0]
    assert x.shape == (3, 12, 16) and x.dtype == torch.float32 and isinstance(y, int)
    # the same images loaded whole hold the same pixels (up to the statistics used to standardise)
    whole = load_dataset("image-folder", path=tmp_path / "imgs", loader="memory", test_fraction=1 / 3,
                         normalize=False)
    raw = load_dataset("image-folder", path=tmp_path / "imgs", loader="stream", test_fraction=1 / 3,
                       normalize=False)
    torch.testing.assert_close(torch.stack([raw.train[i][0] for i in range(12)]), whole.x_train)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 16, 3))
    history = fit(Supervised(model), data, cfg(epochs=1, batch_size=4, val_fraction=0.25), workers=0)
    assert len(history.epochs) == 1


def test_a_damaged_image_found_while_streaming_is_one_paragraph(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from kdistill.data import load_dataset

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8), "L").save(tmp_path / name / f"{i}.png")
    data = load_dataset("image-folder", path=tmp_path, loader="stream", test_fraction=0.25)
    victim = data.train.files[-1]
    victim.write_bytes(b"not a png")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(DataError) as info:
        fit(Supervised(model), data, cfg(epochs=1, val_fraction=0.0), workers=1)
    message = str(info.value)
    assert f"Cannot read image {victim}" in message and "Traceback" not in message


def test_free_heap_memory_is_released_before_dataloader_workers_are_forked(monkeypatch):
    """A forked worker would otherwise keep copy-on-write snapshots of memory the trainer had freed."""
    import kdistill.data.streaming as streaming
    import kdistill.workers

    calls = []
    monkeypatch.setattr(kdistill.workers, "release_free_memory", lambda: calls.append("trim"))
    data = TensorDataset(torch.arange(8.0)[:, None], torch.arange(8))
    in_process = list(streaming.worker_errors_in_words(DataLoader(data, batch_size=4)))
    assert calls == []  # no worker, nothing forked
    with_worker = list(streaming.worker_errors_in_words(DataLoader(data, batch_size=4, num_workers=1)))
    assert calls == ["trim"]
    assert all(torch.equal(a, b) for got, want in zip(with_worker, in_process, strict=True)
               for a, b in zip(got, want, strict=True))


def test_release_free_memory_runs_wherever_it_is_called():
    from kdistill.workers import release_free_memory

    release_free_memory()  # glibc trims its heap; elsewhere it does nothing, and never raises
    release_free_memory()
