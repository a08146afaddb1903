"""Saved models: rebuild one from its checkpoint, reload the data it was trained on, evaluate it.

A kdistill checkpoint records the model's name, options, input shape and
number of classes (``model_spec``) and how its data set was loaded
(``data``, see :func:`kdistill.experiment.records.data_record`), so
``kdistill evaluate CHECKPOINT`` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kdistill.compress.variational import has_variational_state, make_variational, sparsify
from kdistill.data import DataSplits, available_datasets, load_dataset
from kdistill.errors import CheckpointError, ConfigError, DataError, shorten
from kdistill.experiment.evaluation import score_model
from kdistill.models import rebuild_model
from kdistill.train import read_checkpoint
from kdistill.train.checkpoint import load_into, read_checkpoint_metadata, weights_prefix
from kdistill.train.checkpoint_meta import require_model_spec
from kdistill.train.targets import TargetScale, fold


def evaluation_data(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
) -> DataSplits:
    """The data to evaluate a saved model on: by default the data set it was trained on.

    A checkpoint records its config's data set and loader options (see
    :func:`data_record`); they are reused, with ``options`` overriding single
    options (e.g. ``{"path": "moved/reviews.csv"}``) and ``data_dir`` replacing
    the recorded folder (a recorded file that has gone is also looked for by
    name there). The record is read like any file's content: it never starts
    a download, and its paths pass the special-file checks of every loader
    (:func:`kdistill.io.check_input_path`). ``dataset`` ignores the record and loads that data set
    with ``options`` alone. Checkpoints written before the record existed fall
    back to the data set name in their ``model_spec``. A recorded file that no
    longer exists, or an old checkpoint whose data set cannot be reloaded by
    name, raises :class:`~kdistill.errors.DataError` saying what to pass.
    """
    options = dict(options or {})
    reserved = sorted({"data_dir", "download"} & set(options))
    if reserved:
        raise ConfigError(f"'{reserved[0]}' is not a data set option: give the folder with --data-dir "
                          "(data_dir= in Python). With --dataset NAME a missing data set is downloaded; "
                          "from a checkpoint's data record, never.")
    if dataset is not None:
        return load_dataset(dataset, data_dir=data_dir, **options)
    meta = read_checkpoint_metadata(checkpoint)
    record = meta.get("data")
    # the record's types were checked when the metadata was read (kdistill.train.checkpoint_meta)
    if isinstance(record, dict) and record.get("dataset"):
        merged = {**record.get("options", {}), **options}
        gone = []
        for key in record.get("files", []):
            if key in options or Path(str(merged[key])).exists():
                continue
            # a data folder that moved as a whole: its files are found by name under data_dir
            moved = Path(data_dir) / Path(str(merged[key])).name if data_dir is not None else None
            if moved is not None and moved.exists():
                merged[key] = str(moved)
            else:
                gone.append(f"{key}={shorten(merged[key], 200)}")
        if gone:
            raise DataError(
                f"Checkpoint '{checkpoint}' was trained on data set '{record['dataset']}' read from "
                f"{', '.join(gone)}, which no longer exist{'s' if len(gone) == 1 else ''}. Point to the file's new place with "
                f"--data-option {gone[0].split('=', 1)[0]}=NEW_PATH (options={{...}} in Python) or, if "
                "the whole folder moved, --data-dir NEW_FOLDER; or evaluate on another data set with "
                "--dataset NAME and --data-dir DIR."
            )
        folder = data_dir if data_dir is not None else record.get("data_dir")
        # a file never makes kdistill contact the network: the record's download switch is not followed
        try:
            return load_dataset(record["dataset"], data_dir=folder, download=False, **merged)
        except DataError as error:
            if not record.get("download", True):
                raise
            raise DataError(f"{error} (A checkpoint's data record never starts a download; to download "
                            f"the data set, pass --dataset {record['dataset']}.)") from None
    name = meta.get("model_spec", {}).get("dataset", "digits")
    if name not in available_datasets():
        raise DataError(
            f"Checkpoint '{checkpoint}' does not record how to reload its data set (it names only "
            f"'{name}', which is no registered data set; checkpoints from older kdistill versions "
            "keep just this name). Pass --dataset NAME and, if its files are elsewhere, --data-dir "
            "DIR (and --data-option KEY=VALUE for loader options such as path)."
        )
    return load_dataset(name, data_dir=data_dir, **options)


_LOADING: set[str] = set()  # checkpoints being rebuilt now: one whose model names itself loops


def load_model(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a kdistill checkpoint (architecture from its metadata).

    A ``model_spec`` that names an unknown model or options the model refuses
    raises :class:`CheckpointError`: the file, not the user's config, is wrong.
    """
    tensors, meta = read_checkpoint(checkpoint)
    spec = meta.get("model_spec")
    if not spec:
        raise CheckpointError(
            f"Checkpoint '{checkpoint}' does not record which registered model it holds: it was saved "
            "for a module that kdistill.create_model() did not build (your own nn.Module), so it cannot "
            "be rebuilt from the file alone. In Python, build the module as for training and load the "
            "weights with kdistill.train.load_weights(module, path) (docs/EVALUATE.md); to use it from "
            "the command line, register the model with @kdistill.register_model and train it through "
            "create_model()."
        )
    fmt = meta.get("format")  # one of checkpoint_meta.FORMATS, checked when the file was read
    if fmt == "sparse-bitmask":  # a pruned or sparsified model file
        from kdistill.compress.prune import load_sparse

        return load_sparse(checkpoint)
    if fmt is not None and fmt.startswith("int8-"):
        raise CheckpointError(f"Checkpoint '{checkpoint}' holds an int8 model (format '{fmt}'), which runs "
                              "in ONNX Runtime, not PyTorch; load it with "
                              "kdistill.compress.quantize.load_quantized.")
    spec = require_model_spec(meta, f"Checkpoint '{checkpoint}'")
    key = str(Path(checkpoint).resolve())
    if key in _LOADING:
        raise CheckpointError(f"Checkpoint '{checkpoint}' records a model built from itself; it cannot be "
                              "rebuilt.")
    _LOADING.add(key)
    try:
        model = rebuild_model(spec, f"Checkpoint '{checkpoint}'",  # never a download: weights are here
                              missing=lambda: missing_model(checkpoint, spec))
    finally:
        _LOADING.discard(key)
    variational = bool(spec.get("variational")) and has_variational_state(tensors)
    if variational:  # a variational training checkpoint: rebuilt as trained, returned sparsified
        make_variational(model, threshold=float(spec["variational"].get("threshold", 3.0)))
    load_into(model, tensors, weights_prefix(tensors, meta), f"'{checkpoint}'")
    model = sparsify(model, inplace=True) if variational else model
    scale = TargetScale.from_dict(meta.get("target_scale"))
    if scale is not None:  # trained on standardised targets: predict in the data's own units
        try:
            fold(model, scale)
        except ValueError as error:
            raise CheckpointError(f"Checkpoint '{checkpoint}' records a target scale, but {error}.") from None
    model.eval()
    return model, meta


def missing_model(checkpoint: str | Path, spec: dict[str, Any]) -> str:
    """Why a checkpoint's model is not registered here, and which ``--plugin`` registers it."""
    name, plugin = shorten(spec["model"], 100), spec.get("plugin")
    if plugin:
        return (f"Checkpoint '{shorten(checkpoint, 200)}' holds model '{name}', registered by plugin "
                f"'{shorten(plugin, 300)}', which is not loaded: pass --plugin {shorten(plugin, 300)} "
                "(in Python, import that module first).")
    return (f"Checkpoint '{shorten(checkpoint, 200)}' holds model '{name}', which is not registered here: "
            "pass --plugin MODULE_OR_FILE.py naming the code that registers it with "
            f"@register_model('{name}') (in Python, import that module first).")


def check_checkpoint_fits(meta: dict[str, Any], data: DataSplits, path: str | Path) -> None:
    """Refuse data whose number of classes or sample shape differs from what the model was built for."""
    spec = meta.get("model_spec", {})
    if spec and spec.get("num_classes") != data.num_classes:
        raise ConfigError(
            f"Checkpoint '{shorten(path, 200)}' predicts {spec.get('num_classes')} classes but data set "
            f"'{data.name}' has {data.num_classes}."
        )
    shape = spec.get("input_shape") if spec else None
    if shape is not None and tuple(shape) != tuple(data.input_shape):
        raise ConfigError(
            f"Checkpoint '{shorten(path, 200)}' was built for samples of shape {tuple(shape)} but data "
            f"set '{data.name}' has {tuple(data.input_shape)}; evaluate it on the data set it was "
            "trained on (or one of the same shape)."
        )


def evaluate_checkpoint(checkpoint: str | Path, data: DataSplits,
                        teacher_checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Test-set metrics of a saved model, with fidelity to a teacher if one is given.

    The metrics are those its training run wrote to ``metrics.json``
    (:func:`~kdistill.experiment.evaluation.score_model`), latency aside.
    """
    model, meta = load_model(checkpoint)
    check_checkpoint_fits(meta, data, checkpoint)
    teacher = None
    if teacher_checkpoint is not None:
        teacher, teacher_meta = load_model(teacher_checkpoint)
        check_checkpoint_fits(teacher_meta, data, teacher_checkpoint)
    sparse = bool(meta.get("model_spec", {}).get("variational"))  # its deployable size is the sparse encoding
    try:
        return score_model(model, data, teacher, sparse=sparse,
                           sparse_file=checkpoint if meta.get("format") == "sparse-bitmask" else None)
    except ConfigError as error:  # a detector on a classification set, or the other way round
        message = str(error)
        raise ConfigError(f"Checkpoint '{shorten(checkpoint, 200)}': {message[:1].lower()}{message[1:]}") from None
