"""A tiny random BERT and a word-level tokenizer built on the spot: no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers", reason="text tests need kdistill[nlp]")
tokenizers = pytest.importorskip("tokenizers", reason="text tests need kdistill[nlp]")

POSITIVE = ["a good fun film", "great acting and a warm story", "good and great fun",
            "a warm , funny film", "great fun", "the story is good", "funny and warm",
            "a great film", "good acting", "warm and good fun", "a fun great story",
            "funny great acting", "the film is great", "good warm story", "fun fun fun",
            "great and good", "a good story", "the acting is funny", "warm great film",
            "good good film"]
NEGATIVE = ["a bad boring film", "awful acting and a dull story", "bad and awful",
            "a dull , boring film", "awful mess", "the story is bad", "boring and dull",
            "an awful film", "bad acting", "dull and bad mess", "a boring awful story",
            "dull awful acting", "the film is awful", "bad dull story", "boring boring boring",
            "awful and bad", "a bad story", "the acting is dull", "dull awful film",
            "bad bad film"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentences() -> list[tuple[str, int]]:
    return [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A folder with a 4-layer random BERT (hidden 32) and its word-level fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for s, _ in sentences() for w in s.split()})
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, pad_token_id=0)
    transformers.set_seed(0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tsv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "reviews.tsv"
    rows = ["label\tsentence"] + [f"{y}\t{s}" for s, y in sentences()]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # token-id caches go to a per-test folder, never to the user's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
