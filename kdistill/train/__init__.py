"""Training: the loop, optimisers and schedules, and checkpoints."""

from kdistill.train.checkpoint import (
    atomic_write_bytes,
    atomic_write_text,
    load_weights,
    read_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from kdistill.train.loop import (
    History,
    fit,
    resolve_device,
    score,
    seed_everything,
    split_validation,
)

__all__ = [
    "History",
    "atomic_write_bytes",
    "atomic_write_text",
    "fit",
    "load_weights",
    "read_checkpoint",
    "resolve_device",
    "restore_training_state",
    "save_checkpoint",
    "score",
    "seed_everything",
    "split_validation",
]
