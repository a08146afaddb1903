"""Text loading: tokenise once, cache, detect columns, find SST-2, augment."""

from __future__ import annotations

import pytest
import torch

from kdistill.data import load_dataset
from kdistill.errors import DataError
from kdistill.text import data as text_ds
from kdistill.text.augment import augment_ids


def test_text_csv_tokenises_pads_and_caches(tiny_hf_dir, tiny_tsv, tmp_path):
    data = load_dataset("text-csv", path=str(tiny_tsv), tokenizer=str(tiny_hf_dir), max_length=12,
                        test_fraction=0.25)
    assert data.x_train.dtype == torch.long and data.input_shape == (12,)
    assert data.num_train == 30 and data.num_test == 10 and data.num_classes == 2
    # every row starts with [CLS] (id 2), holds [SEP] (id 3) and is right-padded with 0
    assert (data.x_train[:, 0] == 2).all() and ((data.x_train == 3).sum(1) == 1).all()
    lengths = (data.x_train != 0).sum(1)
    assert (data.x_train[torch.arange(12) >= lengths[:, None]] == 0).all()
    cached = list((tmp_path / "cache" / "kdistill" / "text").glob("*.safetensors"))
    assert len(cached) == 2
    again = load_dataset("text-csv", path=str(tiny_tsv), tokenizer=str(tiny_hf_dir), max_length=12,
                         test_fraction=0.25)
    assert torch.equal(again.x_train, data.x_train)


def test_text_csv_needs_label_and_text_columns(tiny_hf_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("stars,title,body\n1,a,b\n0,c,d\n", encoding="utf-8")
    with pytest.raises(DataError, match="no label column 'label'"):
        load_dataset("text-csv", path=str(bad), tokenizer=str(tiny_hf_dir))
    with pytest.raises(DataError, match="which column"):
        load_dataset("text-csv", path=str(bad), label_column="stars", tokenizer=str(tiny_hf_dir))


def test_sst2_reads_a_glue_folder_and_reports_missing_data(tiny_hf_dir, tmp_path, monkeypatch):
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.tsv").write_text("label\tsentence\n1\tgood fun\n0\tbad film\n1\tgreat\n")
    (folder / "dev.tsv").write_text("label\tcontent\n0\tawful story\n1\twarm film\n")
    (folder / "test.tsv").write_text("label\tcontent\n0\tdull\n")
    data = load_dataset("sst2", data_dir=str(tmp_path), tokenizer=str(tiny_hf_dir), max_length=8)
    assert (data.num_train, data.num_test) == (3, 2)
    assert data.class_names == ["negative", "positive"] and data.y_test.tolist() == [0, 1]
    test = load_dataset("sst2", data_dir=str(folder), tokenizer=str(tiny_hf_dir), max_length=8,
                        test_split="test")
    assert test.num_test == 1
    monkeypatch.setattr(text_ds, "sst2_candidates", lambda data_dir: [tmp_path / "nowhere"])
    with pytest.raises(DataError, match="Could not find SST-2.*--data-dir"):
        load_dataset("sst2", tokenizer=str(tiny_hf_dir))


def test_augmentation_masks_inner_tokens_and_samples_ngrams():
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3, 0], [2, 20, 3, 0, 0, 0, 0, 0]])
    new, source = augment_ids(ids, pad_id=0, mask_id=4, copies=3, mask_prob=0.5, ngram_prob=0.5, seed=1)
    assert new.shape == (6, 8) and source.tolist() == [0, 1] * 3
    assert (new[:, 0] == 2).all()  # [CLS] kept
    lengths = (new != 0).sum(1)
    assert (lengths <= (ids[source] != 0).sum(1)).all()
    assert (new[torch.arange(6), lengths - 1] == 3).all()  # [SEP] kept at the end
    assert (new == 4).any() and (lengths < 7).any()  # both rules fired
    again, _ = augment_ids(ids, pad_id=0, mask_id=4, copies=3, mask_prob=0.5, ngram_prob=0.5, seed=1)
    assert torch.equal(new, again)


def test_sst2_examples_name_registered_parts():
    from pathlib import Path

    from kdistill.config import load_config
    from kdistill.registry import DATASETS, METHODS, MODELS

    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("sst2-distilbert-style.yaml", "sst2-distilbert-style-quick.yaml"):
        cfg = load_config(root / name)
        assert cfg.data.dataset in DATASETS
        assert cfg.teacher.model in MODELS and cfg.student.model in MODELS
        assert all(m.name in METHODS for m in cfg.distill.method_list())


def test_real_sst2(dataset_dir, tiny_hf_dir):
    data = load_dataset("sst2", data_dir=str(dataset_dir("sst2")), tokenizer=str(tiny_hf_dir), max_length=8,
                        cache=False)
    assert data.num_train == 67349 and data.num_test == 872 and data.num_classes == 2
    assert set(torch.unique(data.y_train).tolist()) == {0, 1}
