"""ONNX files that store a sparse model's zeros sparsely: weights as ``sparse_initializer``.

An ONNX ``SparseTensorProto`` holds the non-zero values and their linear
positions; the ONNX checker accepts only int64 positions, so a kept entry costs
4 + 8 = 12 bytes against 4 bytes per entry for the dense tensor. A weight is
therefore stored sparsely only when fewer than a third of its entries are
non-zero (the saving is real, not a format change for its own sake). ONNX
Runtime expands sparse initializers to dense tensors when it loads the file,
so inference speed is that of the dense model; only the file shrinks.
"""

from __future__ import annotations

import numpy as np

from kdistill.errors import ConfigError

#: bytes per stored entry: float32 value + int64 linear index
_SPARSE_ENTRY_BYTES = 12


def sparse_initializers(onnx_model: bytes, min_size: int = 64) -> tuple[bytes, list[str]]:
    """Rewrite the float initializers of ``onnx_model`` that are mostly zeros as sparse initializers.

    Returns the new model bytes and the names of the converted tensors. Only
    tensors of at least ``min_size`` entries whose sparse form is smaller are
    converted; the result is checked with ``onnx.checker``.
    """
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ConfigError("The onnx package is not installed: pip install 'kdistill[deploy]'.") from None
    model = onnx.load_from_string(onnx_model)
    converted: list[str] = []
    for init in list(model.graph.initializer):
        array = numpy_helper.to_array(init)
        if array.dtype.kind != "f" or array.size < min_size:
            continue
        positions = np.flatnonzero(array)
        if positions.size * _SPARSE_ENTRY_BYTES >= array.size * array.itemsize:
            continue
        values = numpy_helper.from_array(array.reshape(-1)[positions].astype(array.dtype), init.name)
        indices = numpy_helper.from_array(positions.astype(np.int64), "")
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(array.shape)))
        model.graph.initializer.remove(init)
        converted.append(init.name)
    onnx.checker.check_model(model)
    return model.SerializeToString(), converted
