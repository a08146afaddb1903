"""Sparse variational dropout layers: a Bayesian student that prunes itself.

Molchanov, Ashukha & Vetrov 2017, "Variational Dropout Sparsifies Deep Neural
Networks", give every weight a Gaussian posterior ``q(w) = N(theta, sigma^2)``
under the log-uniform prior. With ``alpha = sigma^2 / theta^2`` (the weight's
dropout rate, ``log alpha`` clipped to ``[-8, 8]``) the KL divergence to the
prior has no closed form; their approximation (eq. 14) is::

    -KL(q(w) || p(w)) ~= k1 * sigmoid(k2 + k3 * log alpha) - 0.5 * log(1 + 1/alpha) - k1
    k1 = 0.63576, k2 = 1.87320, k3 = 1.48695

A weight whose ``log alpha`` grows past a threshold (3, i.e. alpha ~ 20) is
pure noise and is removed. Hegde et al. 2019 ("Variational Student: Learning
Compact and Sparser Networks in Knowledge Distillation Framework") train such a
student against a teacher's soft targets (the KL term enters the loss as the
``variational`` method, :mod:`kdistill.methods.variational`).

The layers use the *additive* parameterisation (``theta`` and ``log_sigma2``
are the parameters, ``log alpha`` is derived) and, in training, the *local
reparameterisation trick*: instead of sampling weights they sample the
pre-activations, ``b ~ N(x theta^T + bias, x^2 sigma^2^T)``. In eval mode they
are deterministic: ``theta`` with the weights at ``log alpha >= threshold`` set
to zero, exactly what :func:`sparsify` keeps.

``theta`` is stored under the dense layer's name ``weight`` (``theta`` is an
alias), so a variational model's state dict is the dense one plus a
``log_sigma2`` per layer, and module paths never change.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kdistill.compress.prune import save_sparse, sparse_state
from kdistill.errors import CheckpointError, ModelError
from kdistill.eval import size_on_disk
from kdistill.models import rebuild_model
from kdistill.registry import MODEL_VARIANTS
from kdistill.train import read_checkpoint
from kdistill.train.checkpoint import load_into
from kdistill.train.checkpoint_meta import require_model_spec
from kdistill.train.distributed import is_main_process

log = logging.getLogger("kdistill")

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_RANGE = (-8.0, 8.0)
DEFAULT_THRESHOLD = 3.0
DEFAULT_LOG_SIGMA2 = -10.0
_EPS = 1e-8

__all__ = [
    "K1", "K2", "K3", "LayerSparsity", "SparseStudent", "SparsityReport", "VariationalConv2d",
    "VariationalLinear", "finish_variational", "has_variational_state", "is_variational",
    "kl_approximation", "kl_divergence", "load_variational", "make_variational", "sparsify",
    "sparsity_report", "variational_layers",
]


def kl_approximation(log_alpha: Tensor) -> Tensor:
    """Molchanov et al.'s approximation of KL(q || log-uniform prior), element-wise.

    ``0.5 * log(1 + 1/alpha)`` is written ``0.5 * softplus(-log alpha)``,
    which stays finite for any ``log alpha``.
    """
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


class _Variational:
    """What the variational Linear and Conv2d share: log alpha, the mask and the KL."""

    weight: nn.Parameter
    log_sigma2: nn.Parameter
    threshold: float

    @property
    def theta(self) -> nn.Parameter:
        """The posterior mean (stored as ``weight``)."""
        return self.weight

    @property
    def log_alpha(self) -> Tensor:
        """``log sigma^2 - log theta^2``, clipped to [-8, 8] as in the paper."""
        raw = self.log_sigma2 - torch.log(self.weight * self.weight + _EPS)
        return torch.clamp(raw, *LOG_ALPHA_RANGE)

    def keep_mask(self, threshold: float | None = None) -> Tensor:
        """True where the weight survives (``log alpha < threshold``)."""
        limit = self.threshold if threshold is None else threshold
        return self.log_alpha < limit

    def masked_weight(self, threshold: float | None = None) -> Tensor:
        return self.weight * self.keep_mask(threshold).to(self.weight.dtype)

    def kl(self) -> Tensor:
        """Summed KL approximation of this layer's weights (the bias stays deterministic)."""
        return kl_approximation(self.log_alpha.float()).sum()

    def _init_variational(self, log_sigma2_init: float, threshold: float) -> None:
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, float(log_sigma2_init)))
        self.threshold = float(threshold)

    def _empty_dense(self) -> nn.Module:
        raise NotImplementedError

    def to_dense(self, threshold: float | None = None) -> nn.Module:
        """The plain layer (``nn.Linear`` / ``nn.Conv2d``) holding the masked weights (pruned entries exactly zero)."""
        dense = self._empty_dense()
        with torch.no_grad():
            dense.weight.copy_(self.masked_weight(threshold))
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold:g}"

    def _copy_dense(self, dense: nn.Module) -> None:
        with torch.no_grad():
            self.weight.copy_(dense.weight)
            if dense.bias is not None:
                self.bias.copy_(dense.bias)
        self.weight.requires_grad_(dense.weight.requires_grad)


def _sample(mean: Tensor, variance: Tensor) -> Tensor:
    return mean + torch.sqrt(variance + _EPS) * torch.randn_like(mean)


class VariationalLinear(_Variational, nn.Linear):
    """``nn.Linear`` with a Gaussian posterior per weight (sparse variational dropout)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 log_sigma2_init: float = DEFAULT_LOG_SIGMA2, threshold: float = DEFAULT_THRESHOLD,
                 device: Any = None, dtype: Any = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_variational(log_sigma2_init, threshold)

    @classmethod
    def from_dense(cls, dense: nn.Linear, *, log_sigma2_init: float = DEFAULT_LOG_SIGMA2,
                   threshold: float = DEFAULT_THRESHOLD) -> VariationalLinear:
        """A variational copy whose ``theta`` and bias start at ``dense``'s values."""
        layer = cls(dense.in_features, dense.out_features, dense.bias is not None,
                    log_sigma2_init=log_sigma2_init, threshold=threshold,
                    device=dense.weight.device, dtype=dense.weight.dtype)
        layer._copy_dense(dense)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.linear(x, self.masked_weight(), self.bias)
        mean = F.linear(x, self.weight, self.bias)
        variance = F.linear(x * x, torch.exp(self.log_sigma2))
        return _sample(mean, variance)

    def _empty_dense(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.out_features, self.bias is not None,
                         device=self.weight.device, dtype=self.weight.dtype)


class VariationalConv2d(_Variational, nn.Conv2d):
    """``nn.Conv2d`` with a Gaussian posterior per weight (sparse variational dropout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, log_sigma2_init: float = DEFAULT_LOG_SIGMA2,
                 threshold: float = DEFAULT_THRESHOLD, device: Any = None, dtype: Any = None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias, padding_mode, device=device, dtype=dtype)
        self._init_variational(log_sigma2_init, threshold)

    @staticmethod
    def _arguments(conv: nn.Conv2d) -> dict[str, Any]:
        return dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
                    kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)

    @classmethod
    def from_dense(cls, dense: nn.Conv2d, *, log_sigma2_init: float = DEFAULT_LOG_SIGMA2,
                   threshold: float = DEFAULT_THRESHOLD) -> VariationalConv2d:
        """A variational copy whose ``theta`` and bias start at ``dense``'s values."""
        layer = cls(**cls._arguments(dense), log_sigma2_init=log_sigma2_init, threshold=threshold)
        layer._copy_dense(dense)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self._conv_forward(x, self.masked_weight(), self.bias)
        mean = self._conv_forward(x, self.weight, self.bias)
        variance = self._conv_forward(x * x, torch.exp(self.log_sigma2), None)
        return _sample(mean, variance)

    def _empty_dense(self) -> nn.Conv2d:
        return nn.Conv2d(**self._arguments(self))


VARIATIONAL = (VariationalLinear, VariationalConv2d)
# exact types only: subclasses such as MultiheadAttention's out_proj are read through
# .weight by their owner, never called, so a variational version would do nothing there
_SWAP: dict[type, type] = {nn.Linear: VariationalLinear, nn.Conv2d: VariationalConv2d}


# ------------------------------------------------------------------ the whole model


def variational_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's variational layers by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, VARIATIONAL)}


def is_variational(model: nn.Module) -> bool:
    return any(isinstance(m, VARIATIONAL) for m in model.modules())


def _replace_children(model: nn.Module, build: Any, skip: Sequence[str] = ()) -> int:
    """Swap children in place; a module shared by several parents is swapped once, everywhere."""
    done: dict[int, nn.Module] = {}
    count = 0
    for parent_path, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            path = f"{parent_path}.{name}" if parent_path else name
            if any(path == s or path.startswith(s + ".") for s in skip):
                continue
            if id(child) not in done:
                new = build(child)
                if new is None:
                    continue
                done[id(child)] = new
                count += 1
            setattr(parent, name, done[id(child)])
    return count


def make_variational(model: nn.Module, *, log_sigma2_init: float = DEFAULT_LOG_SIGMA2,
                     threshold: float = DEFAULT_THRESHOLD, skip: Sequence[str] = ()) -> nn.Module:
    """Swap every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` for its variational version, in place.

    Module paths stay the same (hooks and checkpoints keep their names);
    ``theta`` starts at the existing weights and ``log sigma^2`` at
    ``log_sigma2_init``, so with a very negative value the model in eval mode
    computes what it computed before. Layers under a path in ``skip`` stay
    dense. Returns ``model``; raises :class:`ModelError` if it has no such layer.
    """
    if not LOG_ALPHA_RANGE[0] < threshold < LOG_ALPHA_RANGE[1]:
        raise ModelError(f"The log-alpha threshold must lie inside {LOG_ALPHA_RANGE} (log alpha is "
                         f"clipped there), got {threshold}.")

    def build(child: nn.Module) -> nn.Module | None:
        kind = _SWAP.get(type(child))
        if kind is None:
            return None
        return kind.from_dense(child, log_sigma2_init=log_sigma2_init, threshold=threshold)

    swapped = _replace_children(model, build, skip)
    if not swapped and not is_variational(model):
        raise ModelError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer to make variational.")
    return model


def kl_divergence(model: nn.Module) -> Tensor:
    """Sum of the KL approximation over every variational layer's weights."""
    layers = list(variational_layers(model).values())
    if not layers:
        raise ModelError(f"{type(model).__name__} has no variational layer; call make_variational() first.")
    return torch.stack([layer.kl() for layer in layers]).sum()


def sparsify(model: nn.Module, threshold: float | None = None, *, inplace: bool = False) -> nn.Module:
    """An ordinary model: each variational layer becomes a plain Linear/Conv2d with pruned weights at 0.

    A weight is pruned when its ``log alpha`` reaches ``threshold`` (default:
    each layer's own, 3.0 unless :func:`make_variational` was given another).
    Returns a copy in eval mode (``inplace=True`` converts ``model`` itself).
    """
    target = model if inplace else copy.deepcopy(model)

    def build(child: nn.Module) -> nn.Module | None:
        return child.to_dense(threshold) if isinstance(child, VARIATIONAL) else None

    _replace_children(target, build)
    return target.eval()


# ------------------------------------------------------------------ reporting


@dataclass
class LayerSparsity:
    path: str
    kind: str
    weights: int
    nonzero: int

    @property
    def fraction_zero(self) -> float:
        return 1.0 - self.nonzero / self.weights if self.weights else 0.0


@dataclass
class SparsityReport:
    """Non-zero and total parameters of the deployable (sparsified) model, overall and per layer."""

    total_params: int
    nonzero_params: int
    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def weight_sparsity(self) -> float:
        """Fraction of zero entries over the Linear/Conv2d weights."""
        weights = sum(layer.weights for layer in self.layers)
        return 1.0 - sum(layer.nonzero for layer in self.layers) / weights if weights else 0.0

    @property
    def compression(self) -> float:
        """Total over non-zero parameters (how many times fewer numbers must be stored)."""
        return self.total_params / max(1, self.nonzero_params)

    def to_dict(self) -> dict[str, Any]:
        return {"total_params": self.total_params, "nonzero_params": self.nonzero_params,
                "weight_sparsity": self.weight_sparsity, "compression": self.compression,
                "layers": [dict(asdict(layer), fraction_zero=layer.fraction_zero) for layer in self.layers]}

    def table(self) -> str:
        """A plain-text table, one line per layer."""
        width = max([len(layer.path) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'kind':<6}  {'weights':>10}  {'non-zero':>10}  {'zero %':>7}"]
        for layer in self.layers:
            lines.append(f"{layer.path:<{width}}  {layer.kind:<6}  {layer.weights:>10,}  "
                         f"{layer.nonzero:>10,}  {100 * layer.fraction_zero:>6.2f}%")
        lines.append(f"{'all parameters':<{width}}  {'':<6}  {self.total_params:>10,}  "
                     f"{self.nonzero_params:>10,}  {100 * (1 - self.nonzero_params / max(1, self.total_params)):>6.2f}%")
        return "\n".join(lines)


def sparsity_report(model: nn.Module, threshold: float | None = None) -> SparsityReport:
    """Count what the sparsified model stores: a variational model is sparsified first."""
    plain = sparsify(model, threshold) if is_variational(model) else model
    layers = [LayerSparsity(path, type(m).__name__, m.weight.numel(), int((m.weight != 0).sum()))
              for path, m in plain.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    total = sum(p.numel() for p in plain.parameters())
    nonzero = sum(int((p != 0).sum()) for p in plain.parameters())
    return SparsityReport(total, nonzero, layers)


# ------------------------------------------------------------------ checkpoints


def has_variational_state(tensors: dict[str, Tensor], prefix: str = "model.") -> bool:
    """True when saved tensors hold a variational model (a ``log_sigma2`` beside the weights)."""
    return any(k.startswith(prefix) and k.endswith(".log_sigma2") for k in tensors)


@MODEL_VARIANTS.register("variational")
class VariationalVariant:
    """How :func:`kdistill.compress.load.load_model` reads a checkpoint of ``student.variational``: the
    Bayesian layers rebuilt as trained, the model returned sparsified (a plain, deployable one)."""

    @staticmethod
    def prepare(model: nn.Module, settings: Any, tensors: dict[str, Tensor]) -> bool:
        if not has_variational_state(tensors):  # already sparsified when saved: an ordinary model
            return False
        make_variational(model, threshold=float(settings.get("threshold", DEFAULT_THRESHOLD)))
        return True

    @staticmethod
    def finish(model: nn.Module, settings: Any) -> nn.Module:
        return sparsify(model, inplace=True)


def load_variational(checkpoint: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The variational model of a training checkpoint, not yet sparsified (e.g. to sweep thresholds)."""

    tensors, meta = read_checkpoint(checkpoint)
    spec = meta.get("model_spec") or {}
    settings = spec.get("variational")
    if not settings or not has_variational_state(tensors):
        raise CheckpointError(f"Checkpoint '{checkpoint}' holds no variational model (no log_sigma2 "
                              "tensors); it was not trained with student.variational set.")
    label = f"Checkpoint '{checkpoint}'"
    model = rebuild_model(require_model_spec(meta, label), label)  # never a download: weights are here
    VariationalVariant.prepare(model, settings, tensors)
    load_into(model, tensors, "model", f"'{checkpoint}'")
    return model.eval(), meta


def sparse_file_bytes(model: nn.Module) -> int:
    """Bytes of ``model`` in the bitmask format of :func:`kdistill.compress.prune.save_sparse`."""
    from safetensors.torch import save as save_bytes


    tensors, _ = sparse_state(model)
    return len(save_bytes({k: v.contiguous() for k, v in tensors.items()}))



# ------------------------------------------------------------------ after training

SPARSE_FILE = "sparse.safetensors"


@dataclass
class SparseStudent:
    """The deployable result of a variational run: the sparsified model, its file and its counts."""

    model: nn.Module
    path: Path | None
    report: SparsityReport
    metrics: dict[str, Any]


def sparse_metrics(model: nn.Module, report: SparsityReport | None = None,
                   size_bytes: int | None = None) -> dict[str, Any]:
    """What a sparsified model costs: ``size_bytes`` in the bitmask format (``size_bytes`` given: that
    file's size), ``dense_size_bytes``, ``nonzero_params``, ``weight_sparsity``, ``compression``."""

    report = report or sparsity_report(model)
    return {"size_bytes": size_bytes if size_bytes is not None else sparse_file_bytes(model),
            "dense_size_bytes": size_on_disk(model), "nonzero_params": report.nonzero_params,
            "weight_sparsity": report.weight_sparsity, "compression": report.compression}


def finish_variational(model: nn.Module, last_path: str | Path | None, out_dir: str | Path | None,
                       metadata: dict[str, Any]) -> SparseStudent | None:
    """Turn a trained variational model into the run's sparse model; ``None`` for a dense model.

    The variational run's model is its *last* epoch (its sparsity grows with
    every epoch of the ELBO; the best-validation epoch is usually an earlier,
    denser one): it is reloaded from ``last_path``, sparsified in place at its
    threshold and written to ``OUT/sparse.safetensors`` in the bitmask format
    of :func:`kdistill.compress.prune.save_sparse`, with ``metadata``
    (model_spec, data record) and the sparsity report. ``metrics`` has
    ``size_bytes`` (that file), ``dense_size_bytes``, ``nonzero_params``,
    ``weight_sparsity`` and ``compression``.
    """
    if not is_variational(model):
        return None

    epoch = None
    if last_path is not None and Path(last_path).exists():
        tensors, last_meta = read_checkpoint(last_path)
        load_into(model, tensors, "model", f"'{last_path}'")
        epoch = last_meta.get("epoch")
    sparse = sparsify(model, inplace=True)  # the run's model from here on; no copy of a compiled module
    report = sparsity_report(sparse)
    path = None
    if out_dir is not None and is_main_process():
        meta = dict(metadata, epoch=epoch, sparsity=report.to_dict(), source=str(last_path) if last_path else None)
        path = save_sparse(sparse, Path(out_dir) / SPARSE_FILE, meta)
    metrics = sparse_metrics(sparse, report, path.stat().st_size if path is not None else None)
    log.info("variational model sparsified (epoch %s):\n%s", epoch, report.table())
    return SparseStudent(sparse, path, report, metrics)
