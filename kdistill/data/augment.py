"""Augmentation: batched on the device (jitter, flip, Mixup/CutMix), or per sample in DataLoader workers
(torchvision transforms v2, timm's ``create_transform``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kdistill.errors import ConfigError, DataError, KDistillError
from kdistill.optional_deps import import_torchvision


def jitter(
    x: Tensor,
    max_shift: int,
    generator: torch.Generator | None = None,
    fill: float | Sequence[float] = 0.0,
) -> Tensor:
    """Translate each image by its own random offset of up to ``max_shift`` pixels.

    Offsets are integers drawn uniformly from ``-max_shift..max_shift``
    independently for rows and columns (Hinton et al. used +-2 on MNIST).
    Pixels shifted in are ``fill``, a scalar or one value per channel; pass
    :attr:`DataSplits.fill_value` so standardised images get their true
    background. Runs on ``x``'s device with no loop over samples, and is
    reproducible given a seeded ``generator``. ``max_shift=0`` returns ``x``.
    """
    if x.dim() != 4:
        raise DataError(
            f"jitter needs a batch of images shaped (N, C, H, W); got shape {tuple(x.shape)}. "
            "Turn jitter off for tabular data."
        )
    if max_shift < 0:
        raise DataError(f"jitter max_shift must be >= 0, got {max_shift}.")
    if max_shift == 0 or x.numel() == 0:
        return x
    n, c, h, w = x.shape
    s = int(max_shift)
    gen_device = generator.device if generator is not None else x.device
    shifts = torch.randint(-s, s + 1, (2, n), generator=generator, device=gen_device).to(x.device)
    dy, dx = shifts[0], shifts[1]

    # Pad with the fill colour, then read an HxW window whose origin is moved by
    # the shift: out[i, :, r, q] = x[i, :, r - dy_i, q - dx_i], or fill outside.
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    padded = fill_t.expand(n, c, h + 2 * s, w + 2 * s).clone()
    padded[:, :, s : s + h, s : s + w] = x
    rows = torch.arange(h, device=x.device)[None, :] + (s - dy)[:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + (s - dx)[:, None]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p`` (its own coin per image).

    The usual companion of random crops for natural images and garments;
    leave it off for digits and text, whose mirror image is another symbol.
    """
    if x.dim() != 4:
        raise DataError(f"hflip needs a batch of images shaped (N, C, H, W); got shape {tuple(x.shape)}.")
    if x.numel() == 0 or p <= 0:
        return x
    gen_device = generator.device if generator is not None else x.device
    flip = (torch.rand(len(x), generator=generator, device=gen_device) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _reason(error: BaseException) -> str:
    """An exception's message without its final full stop, or its class name when it has none."""
    return str(error).strip().rstrip(".") or type(error).__name__


class AugmentedDataset(Dataset):
    """Training samples passed through a per-sample image transform, in DataLoader workers.

    The wrapped data set yields standardised float images ``(C, H, W)``; each
    is turned back into 8-bit pixels (with ``mean`` / ``std``, the statistics it
    was standardised with), transformed, and standardised again, so
    torchvision's and timm's transforms see the images they were written for.
    A transform must keep the image's shape (e.g. ``RandomResizedCrop`` to the
    training size).
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        self.dataset = dataset
        self.transform = transform
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Any]:
        x, y = self.dataset[i][:2]
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise DataError(f"Image transforms need images shaped (C, H, W); sample {i} has shape "
                            f"{tuple(getattr(x, 'shape', ()))}. Leave data.augment.transforms and timm unset "
                            "for tables and text.")
        raw = x.float() if self.mean is None or self.std is None else x.float() * self.std + self.mean
        pixels = (raw.clamp(0, 1) * 255).round().to(torch.uint8)
        try:
            out = self.transform(pixels)
        except KDistillError:
            raise
        except Exception as error:  # noqa: BLE001 - options the transform accepted but cannot apply
            raise ConfigError(f"data.augment: the image transform failed on training sample {i}, an image of "
                              f"shape {tuple(x.shape)}: {_reason(error)}. Check the options of "
                              "data.augment.transforms (or data.augment.timm).") from None
        if not isinstance(out, Tensor):  # e.g. ToPILImage last
            raise ConfigError(f"data.augment: the image transform returned an object of type {type(out).__name__}, not an image "
                              "tensor; end data.augment.transforms with a transform that returns one (drop "
                              "ToPILImage and the like).")
        out = out.float().div(255.0) if out.dtype == torch.uint8 else out.float()
        if tuple(out.shape) != tuple(x.shape):
            raise DataError(f"The image transform turned a {tuple(x.shape)} image into {tuple(out.shape)}; it "
                            "must keep the training size (e.g. RandomResizedCrop with size: "
                            f"[{x.shape[1]}, {x.shape[2]}]).")
        if self.mean is not None and self.std is not None:
            out = (out - self.mean) / self.std
        return out, y


class TimmTransform:
    """timm's ``create_transform`` pipeline (PIL in, tensor in [0, 1] out) on 8-bit image tensors."""

    def __init__(self, pipeline: Callable[[Any], Any]) -> None:
        self.pipeline = pipeline

    def __call__(self, pixels: Tensor) -> Tensor:
        from PIL import Image

        array = pixels.permute(1, 2, 0).numpy()
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        out = self.pipeline(image)
        return out[:1] if pixels.shape[0] == 1 and out.shape[0] == 3 else out


def build_transform(transforms: Sequence[Any], timm_options: dict[str, Any] | None,
                    input_shape: Sequence[int]) -> Callable[[Tensor], Tensor] | None:
    """The per-sample training transform the config names, or ``None``.

    ``transforms`` are ``{name, options}`` entries naming classes of
    ``torchvision.transforms.v2`` (``RandomResizedCrop``, ``RandomHorizontalFlip``,
    ``TrivialAugmentWide``, ``RandAugment``, ...), applied in order;
    ``timm_options`` are keyword arguments of ``timm.data.create_transform``
    (``is_training`` is set, ``input_size`` defaults to the data's shape, and
    timm's own normalisation is replaced by kdistill's). Only names of transform
    classes are looked up, so a config cannot reach any other code.
    """
    steps: list[Callable[[Any], Any]] = []
    if transforms:
        import_torchvision()
        try:
            from torchvision.transforms import v2
        except ImportError:
            raise ConfigError("data.augment.transforms needs torchvision: pip install 'kdistill[vision]'.") from None
        for spec in transforms:
            name, options = spec.name, dict(spec.options)
            cls = getattr(v2, name, None) if name.isidentifier() and not name.startswith("_") else None
            if not (isinstance(cls, type) and issubclass(cls, v2.Transform)) or name in {"Compose", "Lambda"}:
                raise ConfigError(f"data.augment.transforms: '{name}' is not a torchvision.transforms.v2 transform "
                                  "(e.g. RandomResizedCrop, RandomHorizontalFlip, TrivialAugmentWide, RandAugment).")
            try:
                steps.append(cls(**options))
            except Exception as error:  # noqa: BLE001 - any option the class refuses, however it says so
                raise ConfigError(f"data.augment.transforms: {name}: {_reason(error)}.") from None
    if timm_options is not None:
        try:
            from timm.data import create_transform
        except ImportError:
            raise ConfigError("data.augment.timm needs timm: pip install 'kdistill[vision]'.") from None
        channels = int(input_shape[0])
        options = {"input_size": tuple(int(d) for d in input_shape), **timm_options, "is_training": True,
                   "mean": (0.0,) * channels, "std": (1.0,) * channels}
        try:
            steps.append(TimmTransform(create_transform(**options)))
        except Exception as error:  # noqa: BLE001 - timm refuses some options with a bare assert
            raise ConfigError(f"data.augment.timm: create_transform refused these options: {_reason(error)}.") from None
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    return Chain(steps)


class Chain:
    """Transforms applied in order (picklable, so DataLoader workers can run it)."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)

    def __call__(self, x: Any) -> Any:
        for step in self.steps:
            x = step(x)
        return x


class BatchMix:
    """Mixup or CutMix of a training batch: mixed inputs and their mixed (soft) targets.

    Wraps ``torchvision.transforms.v2.MixUp`` and ``CutMix``: each batch is
    mixed with probability ``prob``; with both kinds on, CutMix is chosen with
    probability ``switch_prob``. Called as ``mix(x, y)`` with class indices
    ``y`` of shape ``(N,)``, it returns ``(x_mixed, targets)``, ``targets``
    being class probabilities ``(N, num_classes)`` (one-hot for an unmixed
    batch), which ``nn.CrossEntropyLoss`` takes as they are. The draws come
    from torch's global generator, which :func:`~kdistill.train.loop.fit` seeds.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0) -> None:
        if num_classes < 2:
            raise ConfigError("data.augment.mix (Mixup/CutMix) mixes class labels; this data set has no classes "
                              "to mix (a regression or detection set). Remove data.augment.mix.")
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ConfigError("data.augment.mix: mixup_alpha and cutmix_alpha are both 0, so nothing is mixed.")
        import_torchvision()  # also where a CUDA build of torchvision sits beside a CPU torch
        try:
            from torchvision.transforms import v2
        except ImportError:
            raise ConfigError("data.augment.mix needs torchvision: pip install 'kdistill[vision]'.") from None
        self.num_classes = int(num_classes)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4:
            raise DataError(f"Mixup/CutMix needs a batch of images shaped (N, C, H, W); got shape "
                            f"{tuple(x.shape)}. Remove data.augment.mix for tables and text.")
        if y.dim() != 1 or y.is_floating_point():
            raise DataError("Mixup/CutMix needs class indices as labels (shape (N,), integer); got "
                            f"{y.dtype} {tuple(y.shape)}.")
        if len(x) < 2 or float(torch.rand(())) >= self.prob:
            return x, nn.functional.one_hot(y, self.num_classes).to(x.dtype)
        use_cutmix = self.mixup is None or (self.cutmix is not None and float(torch.rand(())) < self.switch_prob)
        mixed, targets = (self.cutmix if use_cutmix else self.mixup)(x, y)
        return mixed, targets.to(x.dtype)


def build_batch_mix(options: Any, num_classes: int) -> BatchMix | None:
    """The :class:`BatchMix` a config's ``data.augment.mix`` section asks for, or ``None`` without one."""
    if options is None:
        return None
    return BatchMix(num_classes, mixup_alpha=options.mixup_alpha, cutmix_alpha=options.cutmix_alpha,
                    switch_prob=options.switch_prob, prob=options.prob)
