"""Export a trained student for deployment: ONNX, a ``torch.export`` program, or bare safetensors.

:func:`export_model` reads a kdistill checkpoint, keeps only the student
(``model.*`` tensors: distillation adapters, optimiser and RNG state are
dropped), writes the requested format and checks that the exported model's
outputs match PyTorch's on random inputs within ``atol``. Image and tabular
models take one float input (``input``); a model that reads something else
is exported by the entry of :data:`kdistill.registry.EXPORTERS` that
matches it (:class:`ModelInputs`): text models take ``input_ids`` and
``attention_mask`` (see :mod:`kdistill.text.deploy`).

Every format carries the model spec and the input spec (shape, layout,
mean/std or the table's scaler, class and column names; see
:mod:`kdistill.data.input_spec`): in ONNX as ``metadata_props``
(``kdistill.input_spec``, ``kdistill.model_spec``, ``kdistill.version``,
each JSON), in ``.pt2`` archives as extra files, in safetensors in the header.
The safetensors export holds the model's own state dict, unprefixed, so
``create_model(...).load_state_dict(load_file(path))`` loads it.

``exported-program`` is a ``.pt2`` archive written by ``torch.export.save``:
load it with ``torch.export.load(path).module()`` (no kdistill needed), or
compile it ahead of time with AOTInductor. Like any PyTorch program file it
may hold pickled data, so load only files you made. It replaces the
TorchScript format (``torch.jit`` is deprecated in PyTorch); asking for
``torchscript`` is refused with a pointer to it.

ONNX files are still written by PyTorch's TorchScript-based ONNX exporter:
its ``torch.export``-based successor cannot trace the BiLSTM text student and
takes several times longer per model, which the compression study pays on
every row. Its deprecation notice is silenced here, where it is issued.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from kdistill import __version__
from kdistill.compress.artifact import save_dense
from kdistill.compress.load import load_model
from kdistill.compress.onnx_runtime import onnx_bytes, ort_session
from kdistill.compress.onnx_sparse import sparse_initializers
from kdistill.compress.prune import save_sparse
from kdistill.data.input_spec import InputSpec, read_input_spec
from kdistill.errors import CheckpointError, ConfigError, ModelError
from kdistill.registry import EXPORTERS
from kdistill.train.checkpoint import atomic_write_bytes, read_kdistill_file

FORMATS = ("onnx", "exported-program", "safetensors")
SUFFIX = {"onnx": ".onnx", "exported-program": ".pt2", "safetensors": ".safetensors"}
#: formats that were dropped, with what to use instead
REMOVED = {
    "torchscript": "TorchScript export was removed (torch.jit is deprecated in PyTorch). Use "
                   "--format exported-program for a .pt2 file that torch.export.load(path).module() "
                   "runs, or --format onnx for ONNX Runtime.",
}


class ModelInputs(Protocol):
    """How to export and check a model that does not take one float ``input`` tensor.

    Optional parts register one in :data:`kdistill.registry.EXPORTERS` (text does, for token ids and an
    attention mask); :func:`model_inputs` finds the entry that ``matches`` a model.
    """

    def matches(self, model: nn.Module) -> bool: ...

    def export_program(self, model: nn.Module) -> torch.export.ExportedProgram: ...

    def onnx_graph(self, model: nn.Module) -> bytes: ...

    def onnx_runner(self, session: Any) -> Any:
        """A callable running ``session`` on what the model reads."""
        ...

    def reference(self, model: nn.Module, run: Any, n: int = 8, seed: int = 0) -> tuple[tuple[Any, ...], Any]:
        """``n`` example inputs for ``run`` (seeded) and the logits the export must give for them."""
        ...

    def note(self, run: Any) -> str | None:
        """What a user of the exported ONNX graph behind ``run`` must know, if anything."""
        ...


def model_inputs(model: nn.Module) -> ModelInputs | None:
    """The registered exporter that matches ``model``, or ``None`` for a model of one float input."""
    for name in EXPORTERS.names():
        entry = EXPORTERS.get(name)
        if entry.matches(model):
            return entry
    return None


@dataclass
class ExportResult:
    path: Path
    format: str
    size_bytes: int
    max_abs_diff: float | None
    note: str | None = None


@torch.no_grad()
def onnx_max_diff(model: nn.Module, onnx_model: bytes | str | Path, input_shape: Sequence[int],
                  n: int = 16, seed: int = 0) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's logits."""
    x = torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed))
    expected = model.to("cpu").eval()(x).numpy()
    got = ort_session(onnx_model).run(None, {"input": x.numpy()})[0]
    return float(np.abs(expected - got).max())


def export_program(model: nn.Module, input_shape: Sequence[int]) -> torch.export.ExportedProgram:
    """``model`` as a ``torch.export`` program with a dynamic batch axis."""
    inputs = model_inputs(model)
    if inputs is not None:
        return inputs.export_program(model)
    model = model.to("cpu").eval()
    example = torch.randn(2, *input_shape)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing notes are for model authors
            return torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as error:  # torch.export raises many kinds on untraceable code
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ModelError(f"torch.export cannot trace {type(model).__name__} ({type(error).__name__}: "
                         f"{first}); export it as ONNX or safetensors instead.") from None


def program_bytes(program: torch.export.ExportedProgram, described: dict[str, Any] | None = None) -> bytes:
    """The ``.pt2`` archive of ``program`` (``torch.export.save``), in memory.

    Each entry of ``described`` is stored as the extra file ``kdistill_KEY.json``
    (read it with ``torch.export.load(path, extra_files={"kdistill_input_spec.json": ""})``).
    """
    buffer = io.BytesIO()
    extra = {PT2_EXTRA.format(k): json.dumps(v) for k, v in (described or {}).items()}
    torch.export.save(program, buffer, extra_files=extra or None)
    return buffer.getvalue()


def load_program(path: str | Path) -> nn.Module:
    """The callable module of a ``.pt2`` file written by :func:`export_model`; trusted files only."""
    return torch.export.load(str(path)).module()


@torch.no_grad()
def max_diff(model: nn.Module, run: Any, input_shape: Sequence[int], n: int = 8, seed: int = 0) -> float:
    """Largest absolute difference between ``model``'s logits and ``run(*inputs)``'s."""
    model = model.to("cpu").eval()
    inputs = model_inputs(model)
    if inputs is not None:
        args, expected = inputs.reference(model, run, n, seed)
    else:
        args = (torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed)),)
        expected = model(*args)
    return float((torch.as_tensor(np.asarray(run(*args))) - expected).abs().max())


def _onnx_runner(path: Path, inputs: ModelInputs | None) -> Any:
    session = ort_session(path)
    if inputs is not None:
        return inputs.onnx_runner(session)
    return lambda x: session.run(None, {"input": x.numpy()})[0]


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None,
                 *, atol: float = 1e-4) -> ExportResult:
    """Export the student in ``checkpoint`` as ``fmt`` (onnx, exported-program or safetensors).

    ``out`` defaults to the checkpoint's name with the format's suffix. The
    ONNX and exported-program files are loaded back and checked against
    PyTorch (text models on padded token ids); a difference above ``atol``
    raises :class:`ModelError`. Every format carries the checkpoint's model
    and input spec (:func:`deployment_metadata`); :func:`read_deployed_spec`
    reads the input spec back.
    """

    if fmt in REMOVED:
        raise ConfigError(REMOVED[fmt])
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    if isinstance(atol, bool) or not isinstance(atol, int | float) or not math.isfinite(atol) or atol < 0:
        raise ConfigError(f"The tolerance (--atol) must be a finite number >= 0, got {atol!r}; the check "
                          "compares the export's outputs with PyTorch's.")
    model, meta = load_model(checkpoint)
    broken = [name for name, tensor in model.state_dict().items()
              if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise ModelError(f"Checkpoint '{checkpoint}' holds NaN or infinite weights ({len(broken)} tensor(s), "
                         f"e.g. '{broken[0][:80]}'); its outputs would be meaningless, so it is not exported. "
                         "Export a checkpoint of a run whose loss stayed finite.")
    spec = meta["model_spec"]
    shape = tuple(spec["input_shape"])
    inputs = model_inputs(model)
    src = Path(checkpoint)
    path = Path(out) if out is not None else src.with_name(src.stem + "-export" + SUFFIX[fmt])
    described = deployment_metadata(meta, f"Checkpoint '{checkpoint}'")
    diff: float | None = None
    note: str | None = None
    sparse = bool(spec.get("variational")) or meta.get("format") == "sparse-bitmask"
    if fmt == "onnx":
        if inputs is not None:
            graph = inputs.onnx_graph(model)
        elif sparse:  # zeros stored sparsely (ONNX sparse_initializer)
            graph = sparse_initializers(onnx_bytes(model, shape))[0]
        else:
            graph = onnx_bytes(model, shape)
        atomic_write_bytes(path, with_onnx_metadata(graph, described))
        run = _onnx_runner(path, inputs)
        diff = max_diff(model, run, shape)
        note = inputs.note(run) if inputs is not None else None
    elif fmt == "exported-program":
        atomic_write_bytes(path, program_bytes(export_program(model, shape), described))
        diff = max_diff(model, load_program(path), shape)
    elif sparse:  # the bitmask format of kdistill.compress.prune

        save_sparse(model, path, {"role": "export", **described})
    else:
        save_dense(model, path, {"role": "export", **described})
    if diff is not None and not diff <= atol:  # a NaN difference is no match either
        raise ModelError(f"The {fmt} export differs from PyTorch by {diff:.2e} (> {atol:g}); "
                         f"the file was written to '{path}' but should not be trusted.")
    return ExportResult(path, fmt, path.stat().st_size, diff, note)


# ------------------------------------------------------------ the spec in every format

#: ONNX ``metadata_props`` keys and the ``.pt2`` extra files that carry :func:`deployment_metadata`
SPEC_KEYS = ("model_spec", "input_spec")
ONNX_PREFIX = "kdistill."
PT2_EXTRA = "kdistill_{}.json"


def deployment_metadata(meta: dict[str, Any], label: str) -> dict[str, Any]:
    """The parts of a checkpoint's metadata that travel with an exported model.

    ``model_spec`` (how to rebuild it) and ``input_spec`` (what it reads,
    :mod:`kdistill.data.input_spec`; absent in checkpoints older than it),
    checked before they are copied.
    """
    out = {"model_spec": meta["model_spec"]}
    spec = read_input_spec(meta, label)
    if spec is not None:
        out["input_spec"] = spec.to_dict()
    return out


def with_onnx_metadata(graph: bytes, described: dict[str, Any]) -> bytes:
    """``graph`` with each entry of ``described`` as JSON in its ``metadata_props`` (``kdistill.KEY``)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("Writing ONNX metadata needs the onnx package: pip install 'kdistill[deploy]'.") from None
    model = onnx.load_from_string(graph)
    kept = [p for p in model.metadata_props if not p.key.startswith(ONNX_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in described.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = ONNX_PREFIX + key, json.dumps(value)
    version = model.metadata_props.add()
    version.key, version.value = ONNX_PREFIX + "version", __version__
    return model.SerializeToString()


def read_deployed_spec(path: str | Path) -> tuple[InputSpec | None, dict[str, Any]]:
    """The input spec (``None`` if the file predates it) and model spec of an exported model file.

    Reads ``.onnx`` metadata_props, a ``.pt2`` archive's extra files (without
    loading the program) and the header of a ``.safetensors`` file or checkpoint.
    """
    path = Path(path)
    label = f"Model file '{path}'"
    if not path.is_file():
        raise CheckpointError(f"{label} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raw = _onnx_props(path, label)
    elif suffix == ".pt2":
        raw = _pt2_extras(path, label)
    else:
        raw = read_kdistill_file(path, label, load_tensors=False)[1]
    return read_input_spec(raw, label), raw.get("model_spec") or {}


def _onnx_props(path: Path, label: str) -> dict[str, Any]:
    session = ort_session(path)
    props = session.get_modelmeta().custom_metadata_map
    return _json_entries({k[len(ONNX_PREFIX):]: v for k, v in props.items() if k.startswith(ONNX_PREFIX)}, label)


def _pt2_extras(path: Path, label: str) -> dict[str, Any]:

    found: dict[str, str] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                for key in SPEC_KEYS:
                    if name.endswith("/extra/" + PT2_EXTRA.format(key)):
                        found[key] = archive.read(name)[:1 << 22].decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{label} is not a readable .pt2 archive ({error}).") from None
    return _json_entries(found, label)


def _json_entries(entries: dict[str, str], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in SPEC_KEYS:
        if key in entries:
            try:
                out[key] = json.loads(entries[key])
            except (json.JSONDecodeError, RecursionError):
                raise CheckpointError(f"{label} has unreadable kdistill metadata ({key}).") from None
    return out
