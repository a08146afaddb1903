"""Export text classifiers (ONNX, ``torch.export`` programs) and time them with ONNX Runtime.

Both exported graphs take ``input_ids`` and ``attention_mask`` (both int64,
``(batch, length)``, dynamic in both axes, length at most the model's
``max_length``) and return logits; they are
:meth:`~kdistill.text.model_common.TextModel.logits`, without the
data-dependent trimming of padding that ``forward`` does in PyTorch.
ONNX needs ``kdistill[deploy]``.
"""

from __future__ import annotations

import io
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.errors import ConfigError, ModelError
from kdistill.io import atomic_write_bytes
from kdistill.registry import EXPORTERS


def is_text_model(model: nn.Module) -> bool:
    """Whether ``model`` reads token ids (a kdistill text model with ``logits(ids, mask)``)."""
    return hasattr(model, "logits") and hasattr(model, "example_input")


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.logits(input_ids, attention_mask.bool())


def export_onnx(model: nn.Module, path: str | Path, length: int | None = None) -> Path:
    """Write ``model`` (a kdistill text model) as an ONNX file at ``path``."""
    path = Path(path)
    atomic_write_bytes(path, onnx_graph(model, length), "ONNX model")
    return path


def onnx_graph(model: nn.Module, length: int | None = None) -> bytes:
    """``model`` (a kdistill text model) as the bytes of an ONNX file."""
    if not is_text_model(model):
        raise ModelError("export_onnx takes a kdistill text model (one with logits(ids, mask)).")
    cpu_model = _LogitsOnly(model).to("cpu").eval()
    ids = model.example_input(2, length).to("cpu")
    mask = torch.ones_like(ids)
    buffer = io.BytesIO()
    # the TorchScript-based ONNX exporter traces fixed-size attention-mask checks and warns about each;
    # the graph stays correct for any (batch, length) and an explicit mask (tested)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                cpu_model, (ids, mask), buffer, input_names=["input_ids", "attention_mask"],
                output_names=["logits"], opset_version=17, dynamo=False,
                dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                              "attention_mask": {0: "batch", 1: "length"}, "logits": {0: "batch"}})
        except Exception as error:  # the exporter raises many error types
            raise ModelError(f"ONNX export of {type(model).__name__} failed: {error}") from None
    return buffer.getvalue()


def export_program(model: nn.Module) -> torch.export.ExportedProgram:
    """``model``'s logits as a ``torch.export`` program, dynamic in batch size and length."""
    if not is_text_model(model):
        raise ModelError("export_program takes a kdistill text model (one with logits(ids, mask)).")
    cpu_model = _LogitsOnly(model).to("cpu").eval()
    ids = model.example_input(2).to("cpu")
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=int(model.max_length))
    shapes = ({0: batch, 1: length}, {0: batch, 1: length})
    try:
        # tracing notes (e.g. on LSTM weights) are for model authors, not for someone exporting
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(cpu_model, (ids, torch.ones_like(ids)), dynamic_shapes=shapes)
    except Exception as error:  # torch.export raises many kinds on untraceable code
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ModelError(f"torch.export cannot trace {type(model).__name__} ({type(error).__name__}: "
                         f"{first}); export it as ONNX instead (--format onnx).") from None


def padded_example(model: nn.Module, n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random ids with trailing padding of varied length (and their mask), to check an export."""
    gen = torch.Generator().manual_seed(seed)
    length = int(model.max_length)
    ids = torch.randint(1, max(2, model.vocab_size), (n, length), generator=gen)
    ids = torch.where(ids == model.pad_id, (ids + 1) % model.vocab_size, ids)
    keep = torch.randint(1, length + 1, (n,), generator=gen)
    keep[0] = length  # one row without padding
    pad = torch.arange(length).unsqueeze(0) >= keep.unsqueeze(1)
    ids = ids.masked_fill(pad, model.pad_id)
    return ids, (~pad).long()


@torch.no_grad()
def reference_logits(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """What an exported text graph must return for ``ids`` / ``mask``."""
    return _LogitsOnly(model).to("cpu").eval()(ids, mask)


def onnx_session(path: str | Path, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX Runtime timing needs onnxruntime: pip install 'kdistill[deploy]'.") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session, ids: Tensor, mask: Tensor) -> dict:
    # an exporter drops inputs the graph never reads (the BiLSTM ignores the mask)
    names = {i.name for i in session.get_inputs()}
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return {k: v for k, v in feeds.items() if k in names}


def onnx_logits(path: str | Path, ids: Tensor, pad_id: int, batch_size: int = 256) -> Tensor:
    """Logits from the ONNX model for every row of ``ids`` (checks the export)."""
    session = onnx_session(path)
    out = []
    for i in range(0, len(ids), batch_size):
        chunk = ids[i:i + batch_size]
        mask = (chunk != pad_id).long()
        feeds = _feeds(session, chunk, mask)
        out.append(torch.from_numpy(session.run(["logits"], feeds)[0]))
    return torch.cat(out)


def onnx_latency(path: str | Path, ids: Tensor, *, warmup: int = 10, repeats: int = 50,
                 threads: int | None = None) -> float:
    """Median milliseconds of one ONNX Runtime call on ``ids`` (all tokens real)."""
    session = onnx_session(path, threads)
    feeds = _feeds(session, ids, torch.ones_like(ids))
    for _ in range(warmup):
        session.run(["logits"], feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(["logits"], feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


@EXPORTERS.register("text")
class TextInputs:
    """How ``kdistill export`` writes and checks a text model: ``input_ids`` and ``attention_mask`` in,
    logits out (see the module's docstring); the check runs on token ids with trailing padding."""

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return is_text_model(model)

    @staticmethod
    def export_program(model: nn.Module) -> torch.export.ExportedProgram:
        return export_program(model)

    @staticmethod
    def onnx_graph(model: nn.Module) -> bytes:
        return onnx_graph(model)

    @staticmethod
    def onnx_runner(session: Any) -> Any:
        """``run(ids, mask)`` on an ONNX Runtime session, with ``run.reads_mask``."""

        def run(ids: Tensor, mask: Tensor) -> Any:
            return session.run(["logits"], _feeds(session, ids, mask))[0]

        run.reads_mask = "attention_mask" in {i.name for i in session.get_inputs()}  # type: ignore[attr-defined]
        return run

    @staticmethod
    def reference(model: nn.Module, run: Any, n: int = 8, seed: int = 0) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """Token ids with trailing padding and their mask, and the logits an export must give for them."""
        ids, mask = padded_example(model, n, seed)
        if not getattr(run, "reads_mask", True):  # a graph without the mask expects unpadded rows
            ids, mask = model.example_input(n), torch.ones_like(ids)
        return (ids, mask), reference_logits(model, ids, mask)

    @staticmethod
    def note(run: Any) -> str | None:
        """What a user of the exported graph must know, if anything."""
        if getattr(run, "reads_mask", True):
            return None
        return ("the graph has no attention_mask input and reads every position: feed it unpadded rows "
                "(one sentence per call, or rows of equal length)")
