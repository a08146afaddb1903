"""Quantize one trained checkpoint with whichever kdistill is on the path; print accuracy and file sizes.

    PYTHONPATH=<checkout> python benchmarks/quantize_compare.py CHECKPOINT OUT_DIR

Used to compare quantization backends across versions (docs/STUDY.md): it
calls ``dynamic_quantize`` with or without ``input_shape``, whichever the
installed version takes.
"""
import inspect
import sys
import time
from pathlib import Path

import torch

from kdistill.compress.artifact import save_dense
from kdistill.compress.load import load_artifact
from kdistill.compress.quantize import dynamic_quantize, save_quantized, static_quantize
from kdistill.eval import accuracy, predict
from kdistill.experiment import evaluation_data, load_model

ckpt, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
model, meta = load_model(ckpt)
data = evaluation_data(ckpt)
spec = meta["model_spec"]
dense = save_dense(model, out / "dense.safetensors", {"model_spec": spec})
print(f"float32  accuracy {100 * accuracy(predict(model, data.x_test), data.y_test):.2f}%  size {dense.stat().st_size:,} B")
new_api = "input_shape" in inspect.signature(dynamic_quantize).parameters
torch.manual_seed(0)
for kind in ("dynamic", "static"):
    start = time.perf_counter()
    if kind == "dynamic":
        q = dynamic_quantize(model, data.input_shape) if new_api else dynamic_quantize(model)
    else:
        q = static_quantize(model, data.x_train[:256])
    path = save_quantized(q, out / f"{kind}.safetensors", kind, {"model_spec": spec})
    back, _ = load_artifact(path)
    acc = accuracy(predict(back, data.x_test), data.y_test)
    print(f"{kind}-int8  accuracy {100 * acc:.2f}%  size {path.stat().st_size:,} B  "
          f"({time.perf_counter() - start:.1f} s to quantize, save and reload)")
