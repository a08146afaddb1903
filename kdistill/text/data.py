"""Text classification data: SST-2 and any CSV/TSV with a text and a label column.

Sentences are tokenised once (see :mod:`kdistill.text.tokenize`) into a padded
``(N, max_length)`` int64 tensor, so ``DataSplits.input_shape`` is
``(max_length,)``. The tokenizer must be the one of the models that will read
the ids; by default both use all-MiniLM-L6-v2's (``tokenizer: minilm``).

SST-2 (Socher et al. 2013, GLUE version): ``train.tsv`` (67,349 phrases),
``dev.tsv`` (872 sentences), ``test.tsv`` (1,821 sentences), a header row,
label 0 (negative) or 1 (positive). The test split used for evaluation is
``dev`` by default (``test_split: test`` for the other one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from kdistill.data.datasets.tabular import (
    check_labels,
    encode_labels,
    missing_column,
    read_table,
    resolve_path,
)
from kdistill.data.options import (
    bool_option,
    choice_option,
    delimiter_option,
    fraction_option,
    int_option,
    path_option,
    seed_option,
    text_option,
)
from kdistill.data.prep import split_indices
from kdistill.data.splits import DataSplits
from kdistill.errors import DataError
from kdistill.registry import register_dataset
from kdistill.text.augment import augment_ids
from kdistill.text.hf import load_tokenizer
from kdistill.text.tokenize import encode_cached

TEXT_COLUMNS = ("sentence", "text", "content", "review", "document", "sentence1")
# longer than any encoder's position table; beyond it the id tensor alone would not fit in memory
MAX_LENGTH = 16_384
MAX_AUGMENT_COPIES = 64
SST2_FILES = ("train.tsv", "dev.tsv", "test.tsv")


def sst2_candidates(data_dir: str | Path | None) -> list[Path]:
    """Folders searched for SST-2, in order."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("KDISTILL_DATA"):
        roots.append(Path(os.environ["KDISTILL_DATA"]).expanduser())
    # a checkout next to a shared data folder: <ancestor>/shared/data, nearest first
    for start in (Path.cwd(), Path(__file__).resolve().parents[3]):
        roots += [parent / "shared" / "data" for parent in start.parents]
    folders = []
    for root in roots:
        for folder in (root, root / "sst2", root / "SST-2"):
            if folder not in folders:
                folders.append(folder)
    return folders


def find_sst2(data_dir: str | Path | None) -> Path:
    tried = []
    for folder in sst2_candidates(data_dir):
        if all((folder / name).is_file() for name in SST2_FILES[:2]):
            return folder
        tried.append(str(folder))
    raise DataError(
        "Could not find SST-2 (train.tsv and dev.tsv). Looked in: " + "; ".join(tried) + ". "
        "Pass --data-dir (data.data_dir) pointing at the folder holding the GLUE SST-2 TSV files, "
        "or set KDISTILL_DATA to it or to its parent with an 'sst2/' subfolder."
    )


def text_column_of(table: dict[str, list[Any]], label_column: str, path: Path,
                   text_column: str | None) -> str:
    if text_column is not None:
        if text_column not in table:
            raise DataError(missing_column(path, "text", text_column, len(table)))
        return text_column
    others = [c for c in table if c != label_column]
    for name in TEXT_COLUMNS:
        if name in others:
            return name
    if len(others) == 1:
        return others[0]
    raise DataError(f"Cannot tell which column of {path} holds the text (none of its {len(table)} "
                    f"columns is named {', '.join(TEXT_COLUMNS)}); set the dataset option text_column.")


def read_text_table(path: Path, label_column: str, text_column: str | None,
                    delimiter: str | None = None) -> tuple[list[str], list[Any]]:
    table = read_table(path, delimiter)
    if label_column not in table:
        raise DataError(missing_column(path, "label", label_column, len(table)))
    column = text_column_of(table, label_column, path, text_column)
    labels = list(table[label_column])
    check_labels(labels, label_column, path)
    return list(table[column]), labels


def build_text_splits(name: str, train_texts: list[str], train_labels: list[Any],
                      test_texts: list[str], test_labels: list[Any], *, tokenizer: str | None,
                      max_length: int, cache: bool, class_names: list[str] | None = None,
                      augment_copies: int = 0, mask_prob: float = 0.1, ngram_prob: float = 0.25,
                      seed: int = 0) -> DataSplits:
    """Tokenise both splits and wrap them in :class:`DataSplits` (labels -> class ids)."""
    _check_text_options(name, max_length, cache, augment_copies, mask_prob, ngram_prob, seed)
    if not train_texts or not test_texts:
        raise DataError(f"Data set '{name}' has no {'training' if not train_texts else 'test'} texts.")

    y_all, names = encode_labels(train_labels + test_labels)
    if len(names) < 2:
        raise DataError(f"Data set '{name}' has a single label value; classification needs two or more.")
    tok = load_tokenizer(tokenizer)
    x_train = encode_cached(tok, train_texts, max_length, use_cache=cache)
    x_test = encode_cached(tok, test_texts, max_length, use_cache=cache)
    y_train = torch.from_numpy(y_all[:len(train_texts)])
    y_test = torch.from_numpy(y_all[len(train_texts):])
    if augment_copies:
        extra, source = augment_ids(x_train, pad_id=int(tok.pad_token_id), mask_id=tok.mask_token_id,
                                    copies=augment_copies, mask_prob=mask_prob, ngram_prob=ngram_prob,
                                    seed=seed)
        x_train, y_train = torch.cat([x_train, extra]), torch.cat([y_train, y_train[source]])
    return DataSplits(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                      num_classes=len(names), input_shape=(max_length,),
                      class_names=class_names or names)


def _check_text_options(name: str, max_length: Any, cache: Any, augment_copies: Any, mask_prob: Any,
                        ngram_prob: Any, seed: Any) -> None:
    int_option(name, "max_length", max_length, 2, MAX_LENGTH)
    bool_option(name, "cache", cache)
    int_option(name, "augment_copies", augment_copies, 0, MAX_AUGMENT_COPIES)
    fraction_option(name, "mask_prob", mask_prob, low_open=False, high_open=False)
    fraction_option(name, "ngram_prob", ngram_prob, low_open=False, high_open=False)
    seed_option(name, seed)


def _tokenizer_option(name: str, tokenizer: Any) -> str | None:
    return path_option(name, "tokenizer", tokenizer, optional=True)


@register_dataset("sst2")
def sst2(*, tokenizer: str | None = None, max_length: int = 64, test_split: str = "dev",
         cache: bool = True, augment_copies: int = 0, mask_prob: float = 0.1,
         ngram_prob: float = 0.25, seed: int = 0, data_dir: str | Path | None = None) -> DataSplits:
    """GLUE SST-2 sentiment: 67,349 training phrases; evaluated on ``dev`` (872) or ``test`` (1,821).

    ``augment_copies > 0`` appends that many augmented copies of the training
    set (Tang et al. 2019 masking and n-gram sampling; labels copied from the
    source phrase, so use ``alpha: 1`` to learn them from the teacher alone).
    """
    choice_option("sst2", "test_split", test_split, ("dev", "test"))
    tokenizer = _tokenizer_option("sst2", tokenizer)
    _check_text_options("sst2", max_length, cache, augment_copies, mask_prob, ngram_prob, seed)
    folder = find_sst2(data_dir)
    test_file = folder / f"{test_split}.tsv"
    if not test_file.is_file():
        raise DataError(f"SST-2 folder {folder} has no {test_split}.tsv.")
    train_texts, train_labels = read_text_table(folder / "train.tsv", "label", None, "\t")
    test_texts, test_labels = read_text_table(test_file, "label", None, "\t")
    for file, labels in ((folder / "train.tsv", train_labels), (test_file, test_labels)):
        bad = next((row for row, v in enumerate(labels, start=1) if str(v) not in ("0", "1")), None)
        if bad is not None:
            raise DataError(f"SST-2 labels must be 0 or 1, but data row {bad} of {file} holds another "
                            "value; is this the GLUE SST-2 file?")
    return build_text_splits("sst2", train_texts, train_labels, test_texts, test_labels,
                             tokenizer=tokenizer, max_length=max_length, cache=cache,
                             class_names=["negative", "positive"], augment_copies=augment_copies,
                             mask_prob=mask_prob, ngram_prob=ngram_prob, seed=seed)


@register_dataset("text-csv")
def text_csv(*, path: str | Path, test_path: str | Path | None = None, text_column: str | None = None,
             label_column: str = "label", delimiter: str | None = None, test_fraction: float = 0.2,
             seed: int = 0, tokenizer: str | None = None, max_length: int = 64, cache: bool = True,
             augment_copies: int = 0, mask_prob: float = 0.1, ngram_prob: float = 0.25,
             data_dir: str | Path | None = None) -> DataSplits:
    """Any CSV/TSV with a text and a label column (the text column is guessed if not given).

    Without ``test_path`` a seeded, stratified ``test_fraction`` of the rows is held out.
    """
    name = "text-csv"
    path = path_option(name, "path", path)
    test_path = path_option(name, "test_path", test_path, optional=True)
    text_column = text_option(name, "text_column", text_column, optional=True)
    label_column = text_option(name, "label_column", label_column)
    delimiter = delimiter_option(name, delimiter)
    fraction_option(name, "test_fraction", test_fraction)
    tokenizer = _tokenizer_option(name, tokenizer)
    _check_text_options(name, max_length, cache, augment_copies, mask_prob, ngram_prob, seed)
    train_file = resolve_path(path, data_dir)
    texts, labels = read_text_table(train_file, label_column, text_column, delimiter)
    if test_path is not None:
        test_file = resolve_path(test_path, data_dir)
        test_texts, test_labels = read_text_table(test_file, label_column, text_column, delimiter)
    else:
        strat, _ = encode_labels(labels)
        train_idx, test_idx = split_indices(strat, len(texts), test_fraction, seed)
        test_texts = [texts[i] for i in test_idx]
        test_labels = [labels[i] for i in test_idx]
        texts = [texts[i] for i in train_idx]
        labels = [labels[i] for i in train_idx]
    return build_text_splits(train_file.stem, texts, labels, test_texts, test_labels,
                             tokenizer=tokenizer, max_length=max_length, cache=cache,
                             augment_copies=augment_copies, mask_prob=mask_prob,
                             ngram_prob=ngram_prob, seed=seed)
