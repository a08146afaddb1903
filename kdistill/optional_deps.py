"""Optional dependencies that need care before they import.

Below every other kdistill module (like :mod:`kdistill.io`): data transforms and the model zoo both
reach torchvision through here.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

import torch

_DECLARED_OPS: list[Any] = []  # a torch Library undoes its definitions when collected: kept here


def import_torchvision() -> None:
    """Import torchvision where its compiled ops cannot load (a CUDA wheel beside a CPU torch).

    PyPI's Linux torchvision wheels are CUDA builds: beside the CPU build of torch their ``_C``
    extension does not load, and importing torchvision then fails while it registers fake kernels
    for ``nms`` / ``qnms`` (``operator torchvision::nms does not exist``). kdistill uses
    torchvision's model definitions (directly and through timm), never those detection ops, so it
    declares the two operators' schemas (no kernels: calling them still fails) and imports again.
    Where the extension loads, nothing is changed.
    """
    if importlib.util.find_spec("torchvision") is None or _DECLARED_OPS:
        return
    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if "torchvision::nms does not exist" not in str(error):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the half-imported package, imported again below
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _DECLARED_OPS.append(library)
        logging.getLogger("kdistill").info(
            "torchvision's compiled ops do not load beside torch %s (a CUDA build of torchvision?); "
            "its models work without them", torch.__version__)
        import torchvision  # noqa: F401,F811
