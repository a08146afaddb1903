"""The Distiller: a frozen teacher, a trainable student, and the losses between them.

Loss (Hinton et al. 2015); :class:`Distiller` states the exact contract and
docs/PYTHON_API.md how it maps onto Keras's and torchdistill's, whose
``alpha`` weights the other term.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kdistill.errors import ConfigError, ModelError
from kdistill.methods.base import DistillationMethod
from kdistill.methods.ce import LabelLoss
from kdistill.methods.hooks import FeatureHooks
from kdistill.methods.kd import HintonKD
from kdistill.methods.regression import TeacherOutputMSE
from kdistill.options import check_options, parameters
from kdistill.registry import METHODS
from kdistill.task import Task, builtin_task
from kdistill.teacher_cache import Storage, TeacherCache
from kdistill.train.objective import FitContext, TrainingObjective, regression_loss
from kdistill.train.objective import LabelLoss as TargetLoss
from kdistill.train.precision import autocast_context

log = logging.getLogger("kdistill")
layers_log = logging.getLogger("kdistill.layers")  # shown by the CLI without -v

if TYPE_CHECKING:
    from kdistill.config import DistillConfig


class Supervised(TrainingObjective):
    """Plain training objective with the Distiller's interface. The default ``loss_fn`` follows the
    targets: cross-entropy for class labels, MSE for a regression set's real-valued targets.

    The label term is reported under ``role``, the part the model plays
    (``"student"``, or ``"teacher"`` when a teacher is trained), so histories
    and tracking name the model whose loss it is.

    ``task`` (``"classification"``, ``"regression"`` or a
    :class:`~kdistill.task.Task`, as for the :class:`Distiller`) says what the
    model outputs. The two built-in names change nothing here (the label loss
    follows the targets either way); a task with a loss of its own replaces
    the label loss (a detector's, :class:`kdistill.detection.task.DetectionTask`:
    the FCOS loss on its boxes, reported as ``cls``, ``box``, ``ctr``), and the
    task's validation score picks the best epoch.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                 label_smoothing: float = 0.0, role: str = "student", task: str | Task = "classification") -> None:
        super().__init__()
        self.student = model
        self.loss_fn = loss_fn or TargetLoss(label_smoothing)
        self.role = role
        # as the Distiller's task_adapter; no `task` name: a Supervised objective trains any targets
        self.task_adapter = task if isinstance(task, Task) else builtin_task(task)

    def prepare(self, x_train: Tensor, context: FitContext) -> None:
        self.task_adapter.prepare_model(self.student, x_train[:2], context)

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        losses = self.task_adapter.label_losses(self.student, inputs, labels)
        if losses is not None:
            return losses
        loss = self.loss_fn(self.student(inputs), labels)
        return {"loss": loss, self.role: loss}

    def validation_score(self, x: Tensor, y: Tensor) -> float:
        return self.task_adapter.validation_score(self.student, x, y)


class Distiller(TrainingObjective):
    """Teach ``student`` from a frozen ``teacher`` (any modules that output logits of the same shape).

    The loss is an explicit weighted sum of terms, each a registered
    :class:`~kdistill.methods.DistillationMethod`: ``ce`` (the labels), ``kd``
    (Hinton's soft targets) and any other method alike.

    Every argument is a keyword (``Distiller(teacher=t, student=s)``): Keras's
    example ``Distiller`` takes ``(student, teacher)`` in the other order, and
    a swapped pair would silently train the teacher. For one batch::

        loss = (1 - alpha) * student_loss_fn(student_logits, labels)
               + alpha * T**2 * distillation_loss_fn(log_softmax(student_logits / T), softmax(teacher_logits / T))
               + sum_k weight_k * method_k(ctx)

    that is, ``alpha`` and ``temperature`` are shorthand for the terms
    ``[(ce, 1 - alpha), (kd at T, alpha)]``, followed by ``methods``.

    * ``alpha`` weights the *distillation* (soft-target) term and ``1 - alpha``
      the label term; default 0.9. Keras's example and torchdistill's
      ``KDLoss`` use ``alpha`` for the label term: their ``alpha=0.1`` is
      ``alpha=0.9`` here. At ``alpha=1`` the label term is not computed, at
      ``alpha=0`` the distillation term is not.
    * ``student_loss_fn(student_logits, labels)``: PyTorch's (input, target)
      order; default ``nn.CrossEntropyLoss()``, or the mean squared error for
      ``task="regression"``.
    * ``distillation_loss_fn(log_p_student, p_teacher)``: the student's
      *log*-probabilities at temperature ``T`` first and the teacher's
      probabilities second, as ``nn.KLDivLoss`` expects; default
      ``nn.KLDivLoss(reduction="batchmean")``, i.e. KL(p_teacher || p_student)
      averaged over the batch. The ``T**2`` factor is applied here, outside it.
    * ``methods``: ``(method, weight)`` pairs whose named terms are added with
      their weights (see :mod:`kdistill.methods`).
    * ``terms``: instead of all of the above, the whole loss as ``(term,
      weight)`` pairs, e.g. ``[(LabelLoss(), 1.0), (ReverseKL(temperature=2),
      0.5)]``; it cannot be combined with ``alpha``, ``temperature``,
      ``methods`` or the two loss functions.
    * ``teacher_precision``: ``"same"`` or ``"bf16"`` (bf16 autocast around the
      frozen teacher only).
    * ``cache_top_k``: with a teacher cache, keep only each sample's K largest
      teacher logits, renormalising its softmax over them (for many classes;
      see :mod:`kdistill.teacher_cache`); the truncation's measured error is
      logged and kept in ``teacher_cache.truncation``.
    * ``teacher_outputs``: the teacher's logits for every sample of the
      training set handed to ``fit``, computed beforehand (row ``i`` for
      sample ``i``, before ``fit`` holds out its validation part). The teacher
      is then never run while training: not for the cache, not per batch.
      Their number of rows must equal the training set's and each row's shape
      the student's output; they need un-augmented inputs, a training set that
      ``fit`` reads itself (not your own DataLoader), classification, and terms
      that read the teacher's logits alone (no hooked teacher layers, no live
      teacher).
    * ``task``: ``"classification"`` (the formula above) or ``"regression"``,
      where one output has no distribution to soften and the distillation term
      is ``mse_loss(student_outputs, teacher_outputs)`` instead (no ``T``, no
      ``distillation_loss_fn``); or a :class:`~kdistill.task.Task` that says
      what the models output, e.g. detection's
      (:class:`~kdistill.detection.task.DetectionTask`, with ``terms=``): the
      same freezing, hooks, teacher cache and weighted sum serve every task.

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
        alpha: float | None = None,
        temperature: float | None = None,
        methods: Sequence[tuple[DistillationMethod, float]] = (),
        terms: Sequence[tuple[DistillationMethod, float]] | None = None,
        teacher_precision: str = "same",
        task: str | Task = "classification",
        cache_top_k: int | None = None,
        teacher_outputs: Tensor | None = None,
    ) -> None:
        super().__init__()
        if cache_top_k is not None and (isinstance(cache_top_k, bool) or cache_top_k < 1):
            raise ConfigError(f"cache_top_k must be a whole number >= 1 (or None), got {cache_top_k!r}.")
        adapter = task if isinstance(task, Task) else builtin_task(task)
        task = adapter.name
        if teacher_precision not in ("same", "bf16"):
            raise ConfigError(f"teacher_precision must be 'same' or 'bf16', got {teacher_precision!r}.")
        shorthand = terms is None
        if terms is None:
            terms = builtin_terms(0.9 if alpha is None else alpha, 4.0 if temperature is None else temperature,
                                  task=task,
                                  student_loss_fn=student_loss_fn or (regression_loss if task == "regression" else None),
                                  distillation_loss_fn=distillation_loss_fn) + list(methods)
        else:
            given = [name for name, value in (("alpha", alpha), ("temperature", temperature),
                                              ("student_loss_fn", student_loss_fn),
                                              ("distillation_loss_fn", distillation_loss_fn),
                                              ("methods", methods or None)) if value is not None]
            if given:
                raise ConfigError(f"Distiller: terms= is the whole loss; {', '.join(given)} would add or weight "
                                  "terms beside it. Give the terms alone (e.g. (LabelLoss(), 0.1), "
                                  "(HintonKD(temperature=4.0), 0.9)), or leave terms out.")
        # the shorthand's values, still read by callers; None when terms= gave the loss
        self.alpha = None if shorthand is False else float(0.9 if alpha is None else alpha)
        self.temperature = None if shorthand is False else float(4.0 if temperature is None else temperature)
        self.teacher = teacher
        self.student = student
        self.task = task  # the task's name; its parts are task_adapter's
        self.task_adapter = adapter
        self.teacher_precision = teacher_precision
        self.cache_top_k = cache_top_k
        # Terms live in two lists so that checkpoints keep naming the added methods' parameters
        # methods.<i> (counting those alone) whatever built-in terms come before them.
        self.builtin_terms = nn.ModuleList()
        self.methods = nn.ModuleList()
        self._order: list[tuple[bool, int, float]] = []  # (built in?, index in its list, weight)
        for term, weight in terms:
            if not isinstance(term, DistillationMethod):
                raise ConfigError(f"Distiller: a loss term must be a DistillationMethod, got {type(term).__name__}.")
            builtin = type(term) in BUILTIN_TERM_TYPES  # a subclass may hook layers or train: an added term
            target = self.builtin_terms if builtin else self.methods
            self._order.append((builtin, len(target), float(weight)))
            target.append(term)
        self.weights = [w for builtin, _, w in self._order if not builtin]  # the added methods' weights
        adapter.check_terms(self.terms)
        self.teacher_cache: TeacherCache | None = None
        self.epoch = 0
        self._student_hooks: FeatureHooks | None = None
        self._teacher_hooks: FeatureHooks | None = None
        self.freeze_teacher()
        self._attach_hooks()
        self.precomputed_outputs = self._check_precomputed(teacher_outputs)

    def _check_precomputed(self, outputs: Tensor | None) -> Tensor | None:
        """``teacher_outputs`` as float32, refused in words where they cannot stand in for the teacher."""
        if outputs is None:
            return None
        if not isinstance(outputs, Tensor) or not outputs.is_floating_point() or outputs.dim() < 2:
            raise ConfigError("Distiller: teacher_outputs must be a floating-point tensor of the teacher's "
                              "logits, one row per training sample (shape (N, num_classes)); got "
                              f"{type(outputs).__name__}{tuple(outputs.shape) if isinstance(outputs, Tensor) else ''}.")
        if self.task != "classification":
            raise ConfigError("Distiller: teacher_outputs work for classification only; a regression teacher "
                              "is run on the standardised targets fit trains on, so let it run.")
        if self.needs_live_teacher or self._teacher_hooks is not None:
            raise ConfigError("Distiller: teacher_outputs hold the teacher's logits only, but a term of this "
                              "loss reads the live teacher or its hooked layers; leave teacher_outputs out "
                              "(the teacher then runs, cached where it can be).")
        return outputs.detach().float()

    @property
    def terms(self) -> list[tuple[nn.Module, float]]:
        """The loss as ``(term, weight)`` pairs, in the order they are added up."""
        return [((self.builtin_terms if builtin else self.methods)[i], w) for builtin, i, w in self._order]

    def describe_loss(self) -> str:
        """The resolved loss in one line: ``0.1 * ce + 0.9 * kd(T=4) + 100 * fitnets``."""
        return " + ".join(f"{weight:g} * {describe_term(term)}" for term, weight in self.terms) or "0"

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
        every_call = self.task_adapter.every_call_hooks
        if student_paths:
            self._student_hooks = FeatureHooks(self.student, student_paths, "student", every_call=every_call)
        if teacher_paths:
            self._teacher_hooks = FeatureHooks(self.teacher, teacher_paths, "teacher", every_call=every_call)

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
                lines.append(f"{method_name(method)}: {describe()}")
            elif method.student_layers or method.teacher_layers:
                student = ", ".join(repr(p) for p in method.student_layers) or "-"
                teacher = ", ".join(repr(p) for p in method.teacher_layers) or "-"
                lines.append(f"{method_name(method)}: student {student} <- teacher {teacher}")
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
        if self.precomputed_outputs is None:
            self.task_adapter.prepare(self, x_train[:2], context)
        else:
            self._check_precomputed_fit(x_train[:2], context)
        self.setup_methods(x_train[:2], context.num_train or len(x_train))
        for line in self.feature_layer_summary():
            layers_log.info("feature layers: %s", line)
        self.to(context.device)  # adapters built by setup_methods
        with autocast_context(context.device, context.amp):  # cached logits match the live teacher's precision
            self._prepare_cache(x_train, context)

    def _check_precomputed_fit(self, sample: Tensor, context: FitContext) -> None:
        """The precomputed outputs fit this training set and this student (the teacher stays idle)."""
        outputs = self.precomputed_outputs
        assert outputs is not None
        if context.train_positions is None or context.train_set_size is None:
            raise ConfigError("Distiller: teacher_outputs are looked up by training-sample index, and batches "
                              "from your own DataLoader carry no fixed one; pass the data set to fit "
                              "instead, or leave teacher_outputs out.")
        if context.augmenting:
            raise ConfigError("Distiller: teacher_outputs were computed on the training samples as they are, "
                              "but augmentation changes every batch; turn augmentation off or leave "
                              "teacher_outputs out.")
        if len(outputs) != context.train_set_size:
            raise ConfigError(f"Distiller: teacher_outputs have {len(outputs)} rows but the training set has "
                              f"{context.train_set_size} samples; give one row per training sample, in the "
                              "training set's order.")
        with torch.no_grad():
            was_training = self.student.training
            self.student.eval()
            try:
                s_out = self.student(sample)
            finally:
                self.student.train(was_training)
        if tuple(s_out.shape[1:]) != tuple(outputs.shape[1:]):
            raise ModelError(f"Distiller: each row of teacher_outputs has shape {tuple(outputs.shape[1:])} but "
                             f"the student's outputs have shape {tuple(s_out.shape[1:])}; both must give one "
                             "logit per class.")
        if self._student_hooks:
            self._student_hooks.pop()

    def _prepare_cache(self, x_train: Tensor, context: FitContext) -> None:
        mode = context.cache
        if mode not in {"auto", "device", "memmap", "off"}:
            raise ConfigError(f"teacher cache must be auto, device, memmap or off; got {mode!r}.")
        self.teacher_cache = None
        hard = [type(_unwrap(m)).__name__ for m in self.methods if _unwrap(m).needs_class_labels]
        if context.augment_mix and hard:
            raise ConfigError(f"{', '.join(hard)} reads one true class per sample, but Mixup/CutMix "
                              "(data.augment.mix) gives every sample a mix of two classes; remove "
                              "data.augment.mix or use a method without class labels (e.g. kd).")
        if self.precomputed_outputs is not None:  # given by the caller: the teacher never runs
            rows = torch.as_tensor(list(context.train_positions or ()), dtype=torch.long)
            self.teacher_cache = TeacherCache(self.precomputed_outputs[rows].to(context.device), {},
                                              context.device)
            log.info("precomputed teacher outputs for %d training samples; the teacher does not run", len(rows))
            return
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
                        device=context.device, storage=storage, directory=directory, top_k=self.cache_top_k,
                        temperatures=self._temperatures(), flatten=self.task_adapter.flatten)
            else:
                self.cache_teacher(x_train, storage=storage, directory=directory)
            log.info("teacher outputs cached for %d training samples (%s); the loop skips the teacher",
                     context.num_train or len(x_train), storage)
            self._log_truncation()
        if self.teacher_cache is None and self.cache_top_k is not None:
            log.warning("distill.cache_top_k has no effect in this run: the teacher runs live, so nothing is "
                        "cached")

    def _temperatures(self) -> tuple[float, ...]:
        """1 and every temperature a loss term softens the teacher with: where a top-k cache is measured."""
        found = {float(t) for term in [*self.builtin_terms, *self.methods]
                 if isinstance(t := getattr(_unwrap(term), "temperature", None), int | float) and t > 0}
        return tuple(sorted({1.0} | found))

    def _log_truncation(self) -> None:
        cache = self.teacher_cache
        if cache is None or cache.top_k is None:
            return
        measured = "; ".join(f"T={t:g}: mean KL(top-k || full) {m['mean_kl']:.3g}, mean TV {m['mean_tv']:.3g}, "
                             f"max TV {m['max_tv']:.3g}" for t, m in cache.truncation.items())
        log.info("teacher cache keeps the top %d of %s logits per sample, renormalised; its error against "
                 "the full softmax on the %d cached samples: %s", cache.top_k, cache.num_classes, len(cache),
                 measured)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def needs_live_teacher(self) -> bool:
        """True when a method must see the teacher run on every batch (its outputs cannot be cached)."""
        return any(_unwrap(m).needs_live_teacher for m in self.methods)

    @torch.no_grad()
    def cache_teacher(self, inputs: Tensor, batch_size: int = 1024, storage: Storage = "device",
                      directory: str | None = None) -> Tensor:
        """Compute the teacher's logits and hooked features for the whole (un-augmented) training set.

        Afterwards ``forward`` looks them up by ``indices`` instead of running
        the teacher. Returns the cached logits (on the host for ``memmap``).
        """
        with self.teacher_autocast(inputs.device):  # the cache holds what the live teacher would give
            self.teacher_cache = TeacherCache.build(self.teacher, inputs, self._teacher_hooks,
                                                    batch_size=batch_size, storage=storage, directory=directory,
                                                    top_k=self.cache_top_k, temperatures=self._temperatures(),
                                                    flatten=self.task_adapter.flatten)
        logits = self.teacher_cache.logits  # with cache_top_k: each sample's K largest logits
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

    def teacher_outputs(self, inputs: Tensor, indices: Tensor | None) -> tuple[Any, dict[str, Any]]:
        """Teacher outputs and hooked features: from the cache when there is one, else a live forward pass."""
        if self.teacher_cache is not None and indices is not None and not self.needs_live_teacher:
            return self.task_adapter.unflatten(*self.teacher_cache.lookup(indices))
        with torch.no_grad(), self.teacher_autocast(inputs.device):
            logits = self.teacher(inputs)
        return logits, self._teacher_hooks.pop() if self._teacher_hooks else {}

    def teacher_logits(self, inputs: Tensor, indices: Tensor | None) -> Tensor:
        return self.teacher_outputs(inputs, indices)[0]

    def validation_score(self, x: Tensor, y: Tensor) -> float:
        """The task's validation metric of the student (accuracy for a classifier, AP for a detector)."""
        return self.task_adapter.validation_score(self.student, x, y)

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        teacher_out, teacher_features = self.teacher_outputs(inputs, indices)
        student_out = self.student(inputs)
        ctx = self.task_adapter.context(
            self, inputs=inputs, labels=labels, indices=indices, student_out=student_out, teacher_out=teacher_out,
            student_features=self._student_hooks.pop() if self._student_hooks else {},
            teacher_features=teacher_features,
        )
        # While a term trains alone (e.g. FitNets stage 1) the other added terms are not computed; the
        # built-in ce and kd terms still are, and are reported, but count zero times in the total.
        exclusive = any(_unwrap(m).exclusive(self.epoch) for m in self.methods)
        losses: dict[str, Tensor] = {}
        total = inputs.new_zeros((), dtype=torch.float32)
        for builtin, i, weight in self._order:
            term = (self.builtin_terms if builtin else self.methods)[i]
            if exclusive and not builtin and not _unwrap(term).exclusive(self.epoch):
                continue
            muted = exclusive and builtin  # zero, but every parameter of its graph keeps a (zero) gradient
            for name, value in term(ctx).items():
                losses[name] = value
                total = total + (weight * value * 0.0 if muted else weight * value)
        losses["loss"] = total
        return losses


# the built-in terms: what alpha and temperature stand for (kd's regression form included)
BUILTIN_TERM_TYPES = (LabelLoss, HintonKD, TeacherOutputMSE)


def builtin_terms(alpha: float, temperature: float, *, task: str = "classification",
                  student_loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                  distillation_loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                  label_smoothing: float = 0.0) -> list[tuple[DistillationMethod, float]]:
    """``[(ce, 1 - alpha), (kd at temperature, alpha)]``, leaving out a term whose weight is 0.

    On regression data (``task="regression"``) the ``kd`` term is the MSE to
    the teacher's outputs (:class:`~kdistill.methods.regression.TeacherOutputMSE`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}.")
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}.")
    terms: list[tuple[DistillationMethod, float]] = []
    if alpha < 1.0:
        terms.append((LabelLoss(label_smoothing, loss_fn=student_loss_fn), 1.0 - alpha))
    if alpha > 0.0:
        soft = TeacherOutputMSE() if task == "regression" else HintonKD(temperature, loss_fn=distillation_loss_fn)
        terms.append((soft, float(alpha)))
    return terms


def describe_term(term: nn.Module) -> str:
    """A term's registered name, with its temperature when it uses one: ``kd(T=4)``."""
    term = _unwrap(term)
    if isinstance(term, TeacherOutputMSE):
        return "kd(mse to the teacher's outputs)"
    name = method_name(term)
    if getattr(term, "uses_temperature", False) and hasattr(term, "temperature"):
        return f"{name}(T={term.temperature:g})"
    return name


@contextlib.contextmanager
def _as_config_error(method: nn.Module):
    """A method's set-up refusing the models or options is a user mistake: report it as one."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise ConfigError(f"Method '{method_name(method)}': {error}") from None


def method_name(method: nn.Module) -> str:
    """The name ``method``'s class is registered under (its class name if it was never registered)."""
    cls = type(_unwrap(method))
    return next((name for name in METHODS if METHODS.get(name) is cls), cls.__name__)


def _unwrap(method: nn.Module) -> nn.Module:
    """The method itself, also while torchrun training has it wrapped in DDP."""
    return method.module if isinstance(method, nn.parallel.DistributedDataParallel) else method


# --------------------------------------------------------------------------- from a config


@dataclass(frozen=True)
class LossTerm:
    """One resolved term of a run's loss: its registered name, weight and complete options."""

    name: str
    weight: float
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "options": dict(self.options)}


def term_class(name: str) -> type[DistillationMethod]:
    """The registered class of loss term ``name`` (looked up now, so terms registered by user code count)."""
    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, DistillationMethod)):
        raise ConfigError(f"'{name}' is registered as a method but is not a DistillationMethod subclass "
                          f"({cls!r}); register_method takes a class whose forward(ctx) returns named losses.")
    return cls


def term_options(name: str, options: dict[str, Any], temperature: float, label_smoothing: float = 0.0) -> dict[str, Any]:
    """``options`` of term ``name`` type-checked against its constructor, completed with the run's values.

    A term that declares ``uses_temperature`` gets ``temperature`` unless its
    options set it; ``ce`` gets ``label_smoothing`` likewise. Keyword-only
    constructor parameters (such as ``loss_fn``) are for Python callers and
    cannot be set from a config.
    """
    cls = term_class(name)
    python_only = [k for k, p in parameters(cls).items() if p.kind is p.KEYWORD_ONLY]
    checked = check_options(f"Method '{name}'", cls, options, skip=python_only)
    if cls.uses_temperature and "temperature" not in checked:
        if "temperature" not in parameters(cls):
            raise ConfigError(f"Method '{name}' declares uses_temperature but its constructor takes no "
                              "'temperature' parameter; add one (the run passes distill.temperature to it).")
        checked["temperature"] = float(temperature)
    if issubclass(cls, LabelLoss) and "label_smoothing" not in checked:
        checked["label_smoothing"] = float(label_smoothing)
    return checked


def build_method(name: str, options: dict, temperature: float) -> DistillationMethod:
    """Instantiate registered term ``name``, turning bad options into a ConfigError."""
    return build_term(LossTerm(name, 1.0, term_options(name, options, temperature)))


def build_term(term: LossTerm, *, task: str = "classification",
               student_loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> DistillationMethod:
    """The module of a resolved term; ``kd`` on regression data is the MSE to the teacher's outputs."""
    cls = term_class(term.name)
    if task == "regression" and cls is HintonKD:
        return TeacherOutputMSE()
    extra: dict[str, Any] = {}
    if cls is LabelLoss and student_loss_fn is not None:
        extra["loss_fn"] = student_loss_fn
    try:
        return cls(**term.options, **extra)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Method '{term.name}': {error}") from None


def resolve_terms(distill: DistillConfig, *, label_smoothing: float = 0.0) -> list[LossTerm]:
    """The loss a ``distill`` section asks for, as an ordered list of terms with weights and options.

    ``distill.terms`` is taken as written. Otherwise ``alpha`` expands to
    ``[ce: 1 - alpha, kd: alpha]`` (a term of weight 0 left out), followed by
    ``method`` / ``methods``. A listed method that *replaces* a built-in term
    (``dkd``, ``regression``: ``replaces = ("kd",)``) drops it while
    ``distill.alpha`` is not set, the other built-in term getting weight 1;
    a config that sets ``alpha`` keeps the weights it asks for.
    """
    if distill.terms:
        listed = [(m.name, m.weight, m.options) for m in distill.terms]
    else:
        extra = [(m.name, m.weight, m.options) for m in distill.method_list()]
        replaced = {r for name, _, _ in extra for r in term_class(name).replaces}
        builtin = [("ce", 1.0 - distill.alpha, {}), ("kd", distill.alpha, {})]
        if "alpha" not in distill.model_fields_set and replaced & {"ce", "kd"}:
            builtin = [(name, 1.0, {}) for name, _, _ in builtin if name not in replaced]
        listed = [t for t in builtin if t[1] > 0.0] + extra
    return [LossTerm(name, float(weight), term_options(name, options, distill.temperature, label_smoothing))
            for name, weight, options in listed]


def replacement_note(distill: DistillConfig) -> str | None:
    """A warning when a listed method replaces ``kd`` but an explicit ``distill.alpha`` keeps it in the loss."""
    if distill.terms or "alpha" not in distill.model_fields_set or distill.alpha == 0:
        return None
    by = sorted({m.name for m in distill.method_list() if "kd" in term_class(m.name).replaces})
    if not by:
        return None
    return (f"{', '.join(by)} replaces the built-in kd term, but distill.alpha is {distill.alpha:g}, which keeps "
            "kd at that weight; remove distill.alpha to train without kd (or list the loss in distill.terms).")


def distiller_from_terms(terms: Sequence[LossTerm], *, teacher: nn.Module, student: nn.Module,
                         task: str = "classification", teacher_precision: str = "same",
                         student_loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> Distiller:
    """A :class:`Distiller` whose loss is exactly ``terms`` (what a run built from a config trains)."""
    modules = [(build_term(t, task=task, student_loss_fn=student_loss_fn), t.weight) for t in terms]
    return Distiller(teacher=teacher, student=student, terms=modules, teacher_precision=teacher_precision,
                     task=task)
