"""Checkpoints: one safetensors file per checkpoint plus a human-readable JSON sidecar.

The file holds tensors under prefixes (``model.`` for the student,
``methods.`` for trainable adapters and memory banks, ``optim.`` for optimiser
state, ``rng.`` for random-number-generator state) and the metadata (epoch,
step, metrics, model name, config) as JSON inside the safetensors header, so a
single atomic rename commits everything. The ``.json`` sidecar is a copy of the
metadata for people and tools; it is never needed to load.

Nothing here unpickles kdistill's own files: loading cannot execute code.
Plain PyTorch ``.pt`` / ``.pth`` state dicts from elsewhere are read by
:func:`load_torch_weights` with ``torch.load(weights_only=True)``, which
refuses any pickle that would build objects other than tensors and containers.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from kdistill.errors import CheckpointError, shorten
from kdistill.io import (
    atomic_write_bytes,
    atomic_write_text,
    check_input_path,
    ensure_writable_dir,
    temp_file_pattern,
    temp_prefix,
)
from kdistill.train.checkpoint_meta import validate_metadata

__all__ = [  # the writing helpers live in kdistill.io; they are re-exported here for older imports
    "atomic_write_bytes", "atomic_write_text", "ensure_writable_dir", "is_torch_pickle", "load_into",
    "load_state_dict_into", "load_strict", "load_weights", "load_torch_weights", "read_checkpoint",
    "read_checkpoint_metadata",
    "read_kdistill_file", "remove_stale_temp_files", "restore_training_state", "save_checkpoint",
]

META_KEY = "kdistill"
FORMAT_VERSION = 1
#: the ``format`` of a file holding the model's own state dict, unprefixed (``kdistill export``)
BARE_FORMAT = "state-dict"


def _flatten_state(prefix: str, state: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    for key, value in state.items():
        if isinstance(value, Tensor):
            # safetensors refuses shared or non-contiguous storage; a clone is cheap here
            tensors[f"{prefix}{key}"] = value.detach().to("cpu").contiguous().clone()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{param_id}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict,
                       label: str = "Checkpoint") -> None:
    """Load optimiser state after checking it fits: torch checks group sizes, not tensor shapes."""
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{label} holds optimiser state that does not fit this run's optimiser "
                               f"({problem}); start a fresh run without --resume.")

    groups, current = meta["param_groups"], optimizer.param_groups
    if len(groups) != len(current):
        raise bad(f"{len(groups)} parameter groups saved, {len(current)} now")
    params: dict[int, Tensor] = {}
    for saved, group in zip(groups, current, strict=True):
        if len(saved["params"]) != len(group["params"]):
            raise bad(f"a group of {len(saved['params'])} parameters saved, {len(group['params'])} now")
        for key, value in group.items():
            if key != "params" and key in saved and _kind(saved[key]) != _kind(value):
                raise bad(f"setting '{key}' is {_kind(saved[key])}, expected {_kind(value)}")
        params.update(zip(saved["params"], group["params"], strict=True))
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, param_id, key = (name.split(".", 2) + ["", ""])[:3]
        if not param_id.isdigit() or int(param_id) not in params or not key:
            raise bad(f"tensor '{name[:80]}' names no parameter of the optimiser")
        param = params[int(param_id)]
        if value.dim() > 0 and (value.shape != param.shape or not value.is_floating_point()):
            raise bad(f"tensor '{name[:80]}' is {value.dtype} {tuple(value.shape)}, but its parameter is "
                      f"{param.dtype} {tuple(param.shape)}")
        state.setdefault(int(param_id), {})[key] = value
    for param_id, scalars in meta.get("scalars", {}).items():
        if int(param_id) not in params:
            raise bad(f"state for parameter {param_id[:20]}, which the optimiser does not have")
        state.setdefault(int(param_id), {}).update(scalars)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as error:
        raise bad(_first_line(error)[:160]) from None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return type(value).__name__


def save_checkpoint(
    path: str | Path,
    modules: dict[str, nn.Module],
    metadata: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write ``modules`` (e.g. ``{"model": student}``), optimiser, gradient-scaler and RNG state atomically."""
    path = Path(path)
    tensors: dict[str, Tensor] = {}
    for prefix, module in modules.items():
        _flatten_state(f"{prefix}.", module.state_dict(), tensors)
    meta = dict(metadata, format_version=FORMAT_VERSION)
    if optimizer is not None:
        optim_tensors, optim_meta = _optimizer_tensors(optimizer)
        tensors.update(optim_tensors)
        meta["optimizer"] = optim_meta
    if scaler is not None and scaler.is_enabled():
        meta["grad_scaler"] = scaler_record(scaler)
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    header = {META_KEY: json.dumps(meta, default=_json_default)}
    remove_stale_temp_files(path)
    # both through this module's atomic_write_bytes, the one write point tests can intercept
    atomic_write_bytes(path, save(tensors, metadata=header))
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2, default=_json_default).encode())
    return path


def refresh_sidecar(path: str | Path) -> None:
    """Rewrite the JSON copy of ``path``'s metadata if it differs (e.g. after a kill between the two)."""
    path = Path(path)
    if not path.is_file():
        return
    meta = read_checkpoint_metadata(path)
    text = json.dumps(meta, indent=2, default=_json_default)
    sidecar = path.with_suffix(".json")
    try:
        current = sidecar.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text:
        atomic_write_bytes(sidecar, text.encode())


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Delete temp files a killed writer of ``path`` (and its JSON sidecar) left behind.

    A temp file carries its writer's pid; it is an orphan when that process
    no longer runs (the checkpoint itself was never touched by the crash).
    Temp files of a live process, e.g. a concurrent writer, are left alone.
    """
    path = Path(path)
    removed = []
    for target in (path, path.with_suffix(".json")):
        try:
            found = list(path.parent.glob(temp_file_pattern(target)))
        except OSError:  # a folder that cannot be listed: the write that follows reports why
            found = []
        for stale in found:
            if _writer_alive(stale.name[len(temp_prefix(target)):]):
                continue
            try:
                stale.unlink(missing_ok=True)
            except OSError:  # e.g. a read-only folder: the write that follows reports it
                continue
            removed.append(stale)
    return removed


def _writer_alive(rest: str) -> bool:
    pid_text = rest.split("-", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False  # an older name without a pid, or this process's own killed write
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def is_torch_pickle(path: str | Path) -> bool:
    """Whether ``path`` names a PyTorch pickle (by suffix) rather than a safetensors file."""
    return Path(path).suffix.lower() in TORCH_SUFFIXES


def load_torch_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a user's PyTorch state dict (``torch.save(model.state_dict(), path)``) safely.

    Uses ``torch.load(weights_only=True)``: a pickle that would construct any
    other object (and so could run code) is refused with a
    :class:`CheckpointError`. A dict holding the state dict under ``state_dict``
    or ``model`` is unwrapped.
    """
    path = check_input_path(path, "Checkpoint", CheckpointError)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        with warnings.catch_warnings():  # protocol notes are noise next to our own message
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message suggests weights_only=False; quote only the line naming the culprit
        lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if lines:
            raise CheckpointError(
                f"Checkpoint '{path}' was refused: it is a pickle that asks to build objects other "
                f"than tensors ({lines[0]}). kdistill loads PyTorch files with weights_only=True so "
                "that a file can never run code; save plain weights with "
                "torch.save(model.state_dict(), path), or use a .safetensors checkpoint."
            ) from None
        raise CheckpointError(
            f"Checkpoint '{path}' is not a readable PyTorch weights file ({_first_line(error)}); "
            "it was read with weights_only=True, which accepts only tensors and plain containers."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"Checkpoint '{path}' is not a readable PyTorch weights file ({_first_line(error)})."
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            f"Checkpoint '{path}' does not hold a state dict of tensors (name -> tensor); save "
            "it with torch.save(model.state_dict(), path)."
        )
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_state_dict_into(module: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """``module.load_state_dict(state)`` with a :class:`CheckpointError` when it does not fit.

    A user's PyTorch weights may be saved in another floating-point precision
    (e.g. ``model.half()``), which is cast; integer weights into float ones are refused.
    """
    load_strict(module, state, f"Checkpoint '{source}' does not fit the configured model ({{}}). "
                 "Check the teacher's model name and options in the config.", float_casts=True)


def _check_dtypes(module: nn.Module, state: dict[str, Tensor], float_casts: bool) -> str | None:
    """Why ``state`` cannot load into ``module`` without a silent cast, or None."""
    expected = module.state_dict()
    for name, tensor in state.items():
        target = expected.get(name)
        if not isinstance(target, Tensor) or not isinstance(tensor, Tensor) or tensor.dtype == target.dtype:
            continue
        if float_casts and tensor.is_floating_point() and target.is_floating_point():
            continue
        return (f"tensor '{name[:80]}' is stored as {tensor.dtype} but the model's is {target.dtype}; "
                "loading would silently cast it")
    return None


def load_strict(module: nn.Module, state: dict[str, Tensor], message: str, *,
                 float_casts: bool = False) -> None:
    """``load_state_dict(strict=True)``; a mismatch becomes a CheckpointError (``{}`` = the reason)."""
    head, _, tail = message.rpartition("{}")
    problem = _check_dtypes(module, state, float_casts) or state_mismatch(module, state)
    if problem is not None:
        raise CheckpointError(head + problem + tail)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:  # e.g. a module's own load hook refusing the values
        raise CheckpointError(head + _first_line(error)[:300] + tail) from None


#: names listed per kind of mismatch before "and N more"
MISMATCH_NAMES = 4


def state_mismatch(module: nn.Module, state: dict[str, Tensor]) -> str | None:
    """Which tensors of ``state`` do not fit ``module``: missing, unexpected, or of another shape.

    Each list is cut to a few names (each shortened) with a count of the
    rest, so a message stays one readable paragraph for any model size.
    ``None`` when every name and shape fits.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} (saved {_shape(state[k])}, model {_shape(expected[k])})" for k in expected
                if k in state and isinstance(state[k], Tensor) and isinstance(expected[k], Tensor)
                and state[k].shape != expected[k].shape]
    parts = [f"{len(names)} {kind}: {_names(names)}" for kind, names in
             (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if names]
    return "; ".join(parts) if parts else None


def _shape(tensor: Tensor) -> str:
    return "x".join(str(d) for d in tensor.shape) or "scalar"


def _names(names: list[str]) -> str:
    shown = ", ".join(shorten(n, 100) for n in names[:MISMATCH_NAMES])
    return shown + (f" and {len(names) - MISMATCH_NAMES} more" if len(names) > MISMATCH_NAMES else "")


def read_kdistill_file(path: str | Path, label: str, *,
                       load_tensors: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and kdistill metadata of any safetensors file kdistill wrote (checkpoint or artifact).

    The one place that opens such files, so every reader reports a missing,
    damaged or foreign file the same way. ``label`` starts each error message
    (e.g. ``"Checkpoint 'best.safetensors'"``); ``load_tensors=False`` reads
    the header alone, which is cheap for large models.
    """
    path = Path(path)
    check_input_path(path, "Checkpoint", CheckpointError)  # a FIFO is no file: say what it is, not "missing"
    if not path.is_file():
        raise CheckpointError(f"{label} does not exist.")
    try:
        tensors = load_file(str(path)) if load_tensors else {}
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{label} is not a readable safetensors file ({error}). kdistill writes its files "
            "atomically, so this file was damaged or made by another tool."
        ) from None
    try:
        meta = json.loads(header.get(META_KEY, "{}"))
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{label} has unreadable kdistill metadata.") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{label} has unreadable kdistill metadata.")
    return tensors, validate_metadata(meta, label)


def _checkpoint_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (path / name).is_file():
                return path / name
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load tensors and metadata, with a clear error for missing or damaged files.

    ``path`` may be a run folder: its ``best``, ``last`` or ``model.safetensors`` is read.
    """
    path = _checkpoint_file(path)
    return read_kdistill_file(path, f"Checkpoint '{path}'")


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata alone (no tensors loaded); same errors as :func:`read_checkpoint`."""
    path = _checkpoint_file(path)
    return read_kdistill_file(path, f"Checkpoint '{path}'", load_tensors=False)[1]


def module_state(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    start = f"{prefix}."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def load_into(module: nn.Module, tensors: dict[str, Tensor], prefix: str, source: str = "") -> None:
    """Load the ``prefix.*`` tensors (``""``: every tensor) into ``module``, strictly."""
    load_strict(module, module_state(tensors, prefix) if prefix else tensors,
                 f"Checkpoint {source} does not fit this model ({{}}). Was it saved for another "
                 "architecture or number of classes?")


def load_weights(module: nn.Module, checkpoint: str | Path) -> nn.Module:
    """Load the model weights of a kdistill checkpoint or exported safetensors file into ``module``.

    For modules that :func:`kdistill.models.create_model` cannot rebuild (your
    own ``nn.Module``): build it as you did for training, then load. Accepts a
    checkpoint (``best.safetensors``, ``last.safetensors`` or a run folder) and
    a bare ``kdistill export --format safetensors`` file. A mismatch raises
    :class:`CheckpointError` listing the missing, unexpected and reshaped
    tensors. Returns ``module`` in eval mode.
    """
    tensors, meta = read_checkpoint(checkpoint)
    load_into(module, tensors, weights_prefix(tensors, meta), f"'{checkpoint}'")
    return module.eval()


def weights_prefix(tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """Where a file keeps the model's tensors: nowhere in bare exports; in a checkpoint, the student's
    moving average (``ema.module``) when training kept one (``train.ema``), else ``model``."""
    if meta.get("format") == BARE_FORMAT:
        return ""
    return "ema.module" if "ema.n_averaged" in tensors else "model"


def scaler_record(scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """The gradient scaler's state as checkpoint metadata (plain numbers: the scale and its schedule)."""
    state = scaler.state_dict()
    return {"scale": float(state["scale"]), "growth_factor": float(state["growth_factor"]),
            "backoff_factor": float(state["backoff_factor"]), "growth_interval": int(state["growth_interval"]),
            "growth_tracker": int(state["_growth_tracker"])}


def restore_scaler(scaler: torch.amp.GradScaler, meta: dict[str, Any], path: str | Path) -> None:
    """Give ``scaler`` the state a checkpoint recorded, so fp16 resumes with the scale it had reached.

    A checkpoint without one (written without fp16) leaves the scaler at its
    initial scale, which it then re-learns within a few steps; that is logged.
    """
    record = meta.get("grad_scaler")
    if not scaler.is_enabled():
        return
    if record is None:
        logging.getLogger("kdistill").warning(
            "checkpoint '%s' holds no fp16 gradient-scaler state (it was not trained with amp: fp16); the "
            "scaler starts from its initial scale", path)
        return
    scaler.load_state_dict({"scale": record["scale"], "growth_factor": record["growth_factor"],
                            "backoff_factor": record["backoff_factor"],
                            "growth_interval": record["growth_interval"],
                            "_growth_tracker": record["growth_tracker"]})


def restore_training_state(
    path: str | Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Load modules, optimiser, gradient-scaler and RNG state saved by :func:`save_checkpoint`; return
    metadata."""
    tensors, meta = read_checkpoint(path)
    if "epoch" not in meta:
        raise CheckpointError(f"Checkpoint '{path}' records no 'epoch', so there is no training to "
                              "resume; resume from a last.safetensors that kdistill wrote.")
    for prefix, module in modules.items():
        load_into(module, tensors, prefix, f"'{path}'")
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"Checkpoint '{path}' holds no optimiser state to resume from.")
        _restore_optimizer(optimizer, tensors, meta["optimizer"], f"Checkpoint '{path}'")
    if scaler is not None:
        restore_scaler(scaler, meta, path)
    rng = [("rng.cpu", torch.get_rng_state, torch.set_rng_state)]
    if torch.cuda.is_available():
        rng.append(("rng.cuda", torch.cuda.get_rng_state, torch.cuda.set_rng_state))
    for name, get_state, set_state in rng:
        if name not in tensors:
            continue
        saved, now = tensors[name], get_state()
        if saved.dtype != now.dtype or saved.shape != now.shape:
            raise CheckpointError(f"Checkpoint '{path}' holds a random-number state '{name}' of "
                                  f"{saved.dtype} {tuple(saved.shape)}, not the {now.dtype} "
                                  f"{tuple(now.shape)} this PyTorch uses; resume with the PyTorch that "
                                  "wrote it, or start a fresh run.")
        set_state(saved)
    return meta
