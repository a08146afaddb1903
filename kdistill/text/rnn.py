"""Non-transformer text students over the teacher's tokenizer ids: ``bilstm``, ``text-cnn``.

``bilstm`` follows Tang et al. (2019), "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks": a one-layer bidirectional LSTM whose
final states (both directions) feed a ReLU hidden layer and the classifier.
``text-cnn`` is Kim (2014): parallel 1-D convolutions of widths 3/4/5 over the
embeddings, max-pooled over time. Both read ids through a factorised
embedding (see :class:`~kdistill.text.model_common.FactorizedEmbedding`) that
``embeddings_from`` can initialise from a pretrained model's word vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdistill.errors import ConfigError
from kdistill.models._common import (
    MAX_LAYERS,
    check_parameters,
    output_size,
    positive_int,
    positive_ints,
    probability,
)
from kdistill.registry import register_model
from kdistill.text.model_common import (
    FactorizedEmbedding,
    TextModel,
    pretrained_word_embeddings,
    text_input_length,
    vocabulary,
)


class BiLSTMClassifier(TextModel):
    def __init__(self, vocab_size: int, pad_id: int, max_length: int, embedding_dim: int,
                 hidden: int, num_outputs: int, dropout: float) -> None:
        super().__init__(vocab_size, pad_id, max_length)
        self.embedding = FactorizedEmbedding(vocab_size, embedding_dim, embedding_dim, pad_id)
        self.lstm = nn.LSTM(embedding_dim, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_outputs)

    def logits(self, ids: Tensor, mask: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            # packed sequences do not export; the exported graph expects unpadded rows
            _, (h, _) = self.lstm(self.embedding(ids))
            return self.head(self.fc(torch.cat([h[-2], h[-1]], dim=-1)))
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.head(self.fc(torch.cat([h[-2], h[-1]], dim=-1)))


class TextCNN(TextModel):
    #: feature methods hook the max-pooled, concatenated filter maps (the input of ``dropout``)
    default_feature_layer = "dropout"

    def __init__(self, vocab_size: int, pad_id: int, max_length: int, embedding_dim: int,
                 channels: int, widths: Sequence[int], num_outputs: int, dropout: float) -> None:
        super().__init__(vocab_size, pad_id, max_length)
        self.widths = tuple(widths)
        self.embedding = FactorizedEmbedding(vocab_size, embedding_dim, embedding_dim, pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, channels, w, padding=w - 1) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * len(self.widths), num_outputs)

    def logits(self, ids: Tensor, mask: Tensor) -> Tensor:
        x = self.embedding(ids).transpose(1, 2)
        pooled = []
        for conv in self.convs:
            y = torch.relu(conv(x))[:, :, : ids.shape[1]]
            # padding positions must never win the max
            y = y.masked_fill(~mask.unsqueeze(1), float("-inf")).amax(-1)
            pooled.append(torch.nan_to_num(y, neginf=0.0))
        return self.head(self.dropout(torch.cat(pooled, dim=-1)))


def _embed_init(model: TextModel, embeddings_from: str | None) -> None:
    if embeddings_from is not None:
        model.embedding.init_from(pretrained_word_embeddings(embeddings_from))


@register_model("bilstm")
def bilstm(input_shape: Sequence[int], num_classes: int, *, hidden: int = 150, embedding_dim: int = 64,
           tokenizer: str | None = None, vocab_size: int | None = None, pad_id: int | None = None,
           embeddings_from: str | None = None, dropout: float = 0.1) -> BiLSTMClassifier:
    """Tang et al. (2019)'s BiLSTM student (hidden 150 per direction) on the teacher's tokens."""
    max_length = text_input_length("bilstm", input_shape)
    hidden = positive_int("bilstm", "hidden", hidden)
    embedding_dim = positive_int("bilstm", "embedding_dim", embedding_dim)
    dropout = probability("bilstm", "dropout", dropout)
    vocab, pad = vocabulary("bilstm", tokenizer, vocab_size, pad_id)
    outputs = output_size("bilstm", num_classes)
    lstm = 2 * 4 * (embedding_dim * hidden + hidden * hidden + 2 * hidden)
    check_parameters("bilstm", vocab * embedding_dim + lstm + (2 * hidden + 1) * hidden + (hidden + 1) * outputs,
                     "hidden or embedding_dim (or the vocabulary)")
    model = BiLSTMClassifier(vocab, pad, max_length, embedding_dim, hidden, outputs, dropout)
    _embed_init(model, embeddings_from)
    model.rebuild_options = {"hidden": hidden, "embedding_dim": embedding_dim, "vocab_size": vocab,
                             "pad_id": pad, "dropout": dropout}
    return model


@register_model("text-cnn")
def text_cnn(input_shape: Sequence[int], num_classes: int, *, channels: int = 100,
             widths: list[int] | None = None, embedding_dim: int = 64, tokenizer: str | None = None,
             vocab_size: int | None = None, pad_id: int | None = None,
             embeddings_from: str | None = None, dropout: float = 0.5) -> TextCNN:
    """Kim (2014)'s CNN: filter widths 3, 4, 5 with ``channels`` maps each, max over time."""
    max_length = text_input_length("text-cnn", input_shape)
    widths = list(positive_ints("text-cnn", "widths", widths if widths is not None else [3, 4, 5]))
    if not widths:
        raise ConfigError("Model 'text-cnn': widths needs at least one filter width.")
    channels = positive_int("text-cnn", "channels", channels)
    embedding_dim = positive_int("text-cnn", "embedding_dim", embedding_dim)
    dropout = probability("text-cnn", "dropout", dropout)
    if max(widths) > MAX_LAYERS:
        raise ConfigError(f"Model 'text-cnn': filter widths must be at most {MAX_LAYERS}, got {max(widths):,}.")
    vocab, pad = vocabulary("text-cnn", tokenizer, vocab_size, pad_id)
    outputs = output_size("text-cnn", num_classes)
    convs = sum(embedding_dim * channels * w + channels for w in widths)
    check_parameters("text-cnn", vocab * embedding_dim + convs + (channels * len(widths) + 1) * outputs,
                     "channels, widths or embedding_dim (or the vocabulary)")
    model = TextCNN(vocab, pad, max_length, embedding_dim, channels, widths, outputs, dropout)
    _embed_init(model, embeddings_from)
    model.rebuild_options = {"channels": channels, "widths": widths, "embedding_dim": embedding_dim,
                             "vocab_size": vocab, "pad_id": pad, "dropout": dropout}
    return model
