"""The Distiller: a frozen teacher, a trainable student, and the losses between them.

Loss (Hinton et al. 2015); :class:`Distiller` states the exact contract and
docs/PYTHON_API.md how it maps onto Keras's and torchdistill's, whose
``alpha`` weights the other term.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from kdistill.errors import ConfigError, ModelError
from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.methods.hooks import FeatureHooks
from kdistill.registry import METHODS
from kdistill.teacher_cache import Storage, TeacherCache
from kdistill.train.objective import FitContext, TrainingObjective
from kdistill.train.precision import autocast_context

log = logging.getLogger("kdistill")
layers_log = logging.getLogger("kdistill.layers")  # shown by the CLI without -v


class Supervised(TrainingObjective):
    """Plain training objective (cross-entropy, or MSE for regression) with the Distiller's interface."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.student = model
        self.loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        loss = self.loss_fn(self.student(inputs), labels)
        return {"loss": loss, "student": loss}


class Distiller(TrainingObjective):
    """Teach ``student`` from a frozen ``teacher`` (any modules that output logits of the same shape).

    Every argument is a keyword (``Distiller(teacher=t, student=s)``): Keras's
    example ``Distiller`` takes ``(student, teacher)`` in the other order, and
    a swapped pair would silently train the teacher. For one batch::

        loss = (1 - alpha) * student_loss_fn(student_logits, labels)
               + alpha * T**2 * distillation_loss_fn(log_softmax(student_logits / T), softmax(teacher_logits / T))
               + sum_k weight_k * method_k(ctx)

    * ``alpha`` weights the *distillation* (soft-target) term and ``1 - alpha``
      the label term; default 0.9. Keras's example and torchdistill's
      ``KDLoss`` use ``alpha`` for the label term: their ``alpha=0.1`` is
      ``alpha=0.9`` here. At ``alpha=1`` the label term is not computed, at
      ``alpha=0`` the distillation term is not.
    * ``student_loss_fn(student_logits, labels)``: PyTorch's (input, target)
      order; default ``nn.CrossEntropyLoss()``.
    * ``distillation_loss_fn(log_p_student, p_teacher)``: the student's
      *log*-probabilities at temperature ``T`` first and the teacher's
      probabilities second, as ``nn.KLDivLoss`` expects; default
      ``nn.KLDivLoss(reduction="batchmean")``, i.e. KL(p_teacher || p_student)
      averaged over the batch. The ``T**2`` factor is applied here, outside it.
    * ``methods``: ``(method, weight)`` pairs whose named terms are added with
      their weights (see :mod:`kdistill.methods`).
    * ``teacher_precision``: ``"same"`` or ``"bf16"`` (bf16 autocast around the
      frozen teacher only).
    * ``task``: ``"classification"`` (the formula above) or ``"regression"``,
      where one output has no distribution to soften and the distillation term
      is ``mse_loss(student_outputs, teacher_outputs)`` instead (no ``T``, no
      ``distillation_loss_fn``).

    ``forward(inputs, labels, indices=None)`` returns a dict of scalar tensors:
    ``"loss"`` (the weighted total above, what is backpropagated),
    ``"student"`` (the unweighted label term, when ``alpha < 1``), ``"kd"``
    (``T**2 * distillation_loss_fn(...)``, not weighted by ``alpha``, when
    ``alpha > 0``) and each method's own terms, unweighted.
    """

    def __init__(
        self,
        *,
        teacher: nn.Module,
        student: nn.Module,
        student_loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        distillation_loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        alpha: float = 0.9,
        temperature: float = 4.0,
        methods: Sequence[tuple[DistillationMethod, float]] = (),
        teacher_precision: str = "same",
        task: str = "classification",
    ) -> None:
        super().__init__()
        if task not in ("classification", "regression"):
            raise ConfigError(f"task must be 'classification' or 'regression', got {task!r}.")
        if teacher_precision not in ("same", "bf16"):
            raise ConfigError(f"teacher_precision must be 'same' or 'bf16', got {teacher_precision!r}.")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {alpha}.")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}.")
        self.teacher = teacher
        self.student = student
        self.student_loss_fn = student_loss_fn or nn.CrossEntropyLoss()
        self.distillation_loss_fn = distillation_loss_fn or nn.KLDivLoss(reduction="batchmean")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.methods = nn.ModuleList([m for m, _ in methods])
        self.weights = [float(w) for _, w in methods]
        self.teacher_precision = teacher_precision
        self.task = task
        self.teacher_cache: TeacherCache | None = None
        self.epoch = 0
        self._student_hooks: FeatureHooks | None = None
        self._teacher_hooks: FeatureHooks | None = None
        self.freeze_teacher()
        self._attach_hooks()

    # -- set-up -----------------------------------------------------------------
    def freeze_teacher(self) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # dropout / batch-norm statistics of the teacher never change
        return self

    def _attach_hooks(self) -> None:
        for method in self.methods:
            with _as_config_error(method):
                method.bind(self.student, self.teacher)
        student_paths = [p for m in self.methods for p in m.student_layers]
        teacher_paths = [p for m in self.methods for p in m.teacher_layers]
        if student_paths:
            self._student_hooks = FeatureHooks(self.student, student_paths, "student")
        if teacher_paths:
            self._teacher_hooks = FeatureHooks(self.teacher, teacher_paths, "teacher")

    def feature_layer_summary(self) -> list[str]:
        """One line per method that hooks layers, naming them: ``fitnets: student 'features' <- teacher 'layer3'``.

        ``(default)`` marks a layer picked by
        :func:`kdistill.methods.default_feature_layer` rather than named in the
        method's options. Methods that hook nothing (kd, dkd, ...) are left out.
        """
        lines = []
        for method in self.methods:
            method = _unwrap(method)
            describe = getattr(method, "describe_layers", None)
            if callable(describe):
                lines.append(f"{_method_name(method)}: {describe()}")
            elif method.student_layers or method.teacher_layers:
                student = ", ".join(repr(p) for p in method.student_layers) or "-"
                teacher = ", ".join(repr(p) for p in method.teacher_layers) or "-"
                lines.append(f"{_method_name(method)}: student {student} <- teacher {teacher}")
        return lines

    def check_compatible(self, sample: Tensor) -> None:
        """Fail early, in words, if teacher and student outputs cannot be compared."""
        with torch.no_grad():
            was_training = self.student.training
            self.student.eval()
            try:
                t_out = self.teacher(sample)
                s_out = self.student(sample)
            finally:
                self.student.train(was_training)
        if not isinstance(t_out, Tensor) or not isinstance(s_out, Tensor):
            raise ModelError("Teacher and student must return a tensor of logits.")
        if t_out.shape != s_out.shape:
            raise ModelError(
                f"The teacher's outputs have shape {tuple(t_out.shape)} but the student's have "
                f"shape {tuple(s_out.shape)} for the same input; distillation compares them "
                "class by class, so both models must predict the same number of classes."
            )
        if self._student_hooks:
            self._student_hooks.pop()
        if self._teacher_hooks:
            self._teacher_hooks.pop()

    def setup_methods(self, sample: Tensor, num_train: int) -> None:
        for method in self.methods:
            with _as_config_error(method):
                method.setup(self.student, self.teacher, sample, num_train)

    def prepare(self, x_train: Tensor, context: FitContext) -> None:
        """Check the pair, build method adapters, and cache the teacher when its inputs never change."""
        self.check_compatible(x_train[:2])
        self.setup_methods(x_train[:2], context.num_train or len(x_train))
        for line in self.feature_layer_summary():
            layers_log.info("feature layers: %s", line)
        self.to(context.device)  # adapters built by setup_methods
        with autocast_context(context.device, context.amp):  # cached logits match the live teacher's precision
            self._prepare_cache(x_train, context)

    def _prepare_cache(self, x_train: Tensor, context: FitContext) -> None:
        mode = context.cache
        if mode not in {"auto", "device", "memmap", "off"}:
            raise ConfigError(f"teacher cache must be auto, device, memmap or off; got {mode!r}.")
        self.teacher_cache = None
        if context.augmenting:
            log.info("augmentation is on: the teacher runs live on every augmented batch (no cache)")
        elif mode == "off":
            log.info("teacher cache is off: the teacher runs live on every batch")
        elif self.needs_live_teacher:
            log.info("a distillation method needs the live teacher: the teacher runs on every batch")
        elif context.streaming and context.train_batches is None:
            log.info("batches from your own DataLoader carry no fixed sample order: the teacher runs live")
        else:
            # a streamed set need not fit in memory: its cache goes to disk unless asked otherwise
            folder = context.cache_dir or (context.out_dir / "teacher-cache" if context.out_dir else None)
            memmap = mode == "memmap" or (mode == "auto" and context.streaming and folder is not None)
            storage: Storage = "memmap" if memmap else "device"
            directory = str(folder) if storage == "memmap" and folder is not None else None
            if context.train_batches is not None:
                with self.teacher_autocast(context.device):
                    self.teacher_cache = TeacherCache.build_from_batches(
                        self.teacher, context.train_batches(), context.num_train, self._teacher_hooks,
                        device=context.device, storage=storage, directory=directory)
            else:
                self.cache_teacher(x_train, storage=storage, directory=directory)
            log.info("teacher outputs cached for %d training samples (%s); the loop skips the teacher",
                     context.num_train or len(x_train), storage)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def needs_live_teacher(self) -> bool:
        """True when a method must see the teacher run on every batch (its outputs cannot be cached)."""
        return any(getattr(m, "needs_teacher_features", False) for m in self.methods)

    @torch.no_grad()
    def cache_teacher(self, inputs: Tensor, batch_size: int = 1024, storage: Storage = "device",
                      directory: str | None = None) -> Tensor:
        """Compute the teacher's logits and hooked features for the whole (un-augmented) training set.

        Afterwards ``forward`` looks them up by ``indices`` instead of running
        the teacher. Returns the cached logits (on the host for ``memmap``).
        """
        with self.teacher_autocast(inputs.device):  # the cache holds what the live teacher would give
            self.teacher_cache = TeacherCache.build(self.teacher, inputs, self._teacher_hooks,
                                                    batch_size=batch_size, storage=storage, directory=directory)
        logits = self.teacher_cache.logits
        return logits if isinstance(logits, Tensor) else torch.from_numpy(logits)

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"model": self.student}
        if len(self.methods):
            modules["methods"] = self.methods
        return modules

    # -- the loss ---------------------------------------------------------------
    def teacher_autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast around the frozen teacher when ``teacher_precision='bf16'``, else no change.

        The teacher only runs forward, so its matmuls can use bf16 while the
        student still trains in the loop's precision: on CPUs with AVX512-BF16
        this cuts the live teacher's cost by about 40%.
        """
        if self.teacher_precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def teacher_outputs(self, inputs: Tensor, indices: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher logits and hooked features: from the cache when there is one, else a live forward pass."""
        if self.teacher_cache is not None and indices is not None and not self.needs_live_teacher:
            return self.teacher_cache.lookup(indices)
        with torch.no_grad(), self.teacher_autocast(inputs.device):
            logits = self.teacher(inputs)
        return logits, self._teacher_hooks.pop() if self._teacher_hooks else {}

    def teacher_logits(self, inputs: Tensor, indices: Tensor | None) -> Tensor:
        return self.teacher_outputs(inputs, indices)[0]

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        teacher_logits, teacher_features = self.teacher_outputs(inputs, indices)
        student_logits = self.student(inputs)
        t = self.temperature
        losses: dict[str, Tensor] = {}
        total = student_logits.new_zeros((), dtype=torch.float32)
        if self.alpha < 1.0:
            losses["student"] = self.student_loss_fn(student_logits, labels)
            total = total + (1.0 - self.alpha) * losses["student"]
        if self.alpha > 0.0 and self.task == "regression":
            # one output has no distribution to soften: the teacher's predictions are the targets
            losses["kd"] = nn.functional.mse_loss(student_logits.float(), teacher_logits.float())
            total = total + self.alpha * losses["kd"]
        elif self.alpha > 0.0:
            log_p_s = torch.log_softmax(student_logits.float() / t, dim=-1)
            p_t = torch.softmax(teacher_logits.float() / t, dim=-1)
            losses["kd"] = t * t * self.distillation_loss_fn(log_p_s, p_t)
            total = total + self.alpha * losses["kd"]
        if len(self.methods):
            ctx = StepContext(
                inputs=inputs, labels=labels, student_logits=student_logits,
                teacher_logits=teacher_logits, indices=indices, epoch=self.epoch,
                student_features=self._student_hooks.pop() if self._student_hooks else {},
                teacher_features=teacher_features,
            )
            exclusive = any(_unwrap(m).exclusive(self.epoch) for m in self.methods)
            if exclusive:  # e.g. FitNets stage 1: only the hint loss trains the student
                total = total * 0.0
            for method, weight in zip(self.methods, self.weights):
                if exclusive and not _unwrap(method).exclusive(self.epoch):
                    continue
                for name, value in method(ctx).items():
                    losses[name] = value
                    total = total + weight * value
        losses["loss"] = total
        return losses


@contextlib.contextmanager
def _as_config_error(method: nn.Module):
    """A method's set-up refusing the models or options is a user mistake: report it as one."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise ConfigError(f"Method '{method_name(method)}': {error}") from None


def method_name(method: nn.Module) -> str:
    """The registered name of a method instance (its class name if it was never registered)."""
    cls = type(_unwrap(method))
    for name in METHODS.names():
        if METHODS.get(name) is cls:
            return name
    return cls.__name__


def _unwrap(method: nn.Module) -> nn.Module:
    """The method itself, also while torchrun training has it wrapped in DDP."""
    return method.module if isinstance(method, nn.parallel.DistributedDataParallel) else method


def _method_name(method: nn.Module) -> str:
    """The name ``method``'s class is registered under (its class name if it is not registered)."""
    import kdistill.methods  # noqa: F401  (registers the built-in methods)

    return next((name for name in METHODS if METHODS.get(name) is type(method)), type(method).__name__)


def build_method(name: str, options: dict, temperature: float) -> DistillationMethod:
    """Instantiate a registered method, turning bad options into a ConfigError."""
    import kdistill.methods  # noqa: F401  (registers the built-in methods)

    cls = METHODS.get(name)
    params = inspect.signature(cls).parameters
    kwargs = dict(options)
    if "temperature" in params and "temperature" not in kwargs:
        kwargs["temperature"] = temperature
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = ", ".join(p for p in params if p not in {"self"}) or "(none)"
        raise ConfigError(
            f"Method '{name}' has no option {', '.join(repr(u) for u in unknown)}; "
            f"its options are: {allowed}."
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Method '{name}': {error}") from None
