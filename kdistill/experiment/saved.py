"""Saved models: rebuild one from its checkpoint, reload the data it was trained on, evaluate it.

A kdistill checkpoint records the model's name, options, input shape and
number of classes (``model_spec``) and how its data set was loaded
(``data``, see :func:`kdistill.experiment.records.data_record`), so
``kdistill evaluate CHECKPOINT`` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdistill.compress.load import load_model
from kdistill.data import DataSplits, available_datasets, load_dataset
from kdistill.errors import ConfigError, DataError, shorten
from kdistill.experiment.evaluation import score_model
from kdistill.train.checkpoint import read_checkpoint_metadata


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
