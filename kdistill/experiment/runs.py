"""Run folders are kept: what an earlier run left in a folder, and when a new run may write there.

kdistill's policy, the same for ``kdistill train``, ``distill`` and ``tune``
and for :func:`kdistill.schemes.run_experiment`:

* A run folder that holds a run (a ``last.safetensors`` checkpoint, finished
  or stopped part-way) is never written over silently. A new run refuses to
  start there with a :class:`~kdistill.errors.RunExistsError` (exit code 2)
  that says what to do: ``--resume FOLDER/last.safetensors`` continues an
  unfinished run, ``--overwrite`` replaces the run, and another ``-o`` keeps
  both. ``distill --method crd`` after a ``kd`` run therefore never replaces
  the ``kd`` student.
* The teacher that a distillation run trains under ``OUT/teacher`` is reused
  when it finished with the same settings and resumed when it stopped
  part-way with the same settings (a note says which). A teacher trained with
  other settings, including another number of epochs, is refused with the
  difference named, and replaced only under ``--overwrite``: a finished
  3-epoch cosine schedule is never stretched into a 40-epoch one.
* Every run folder holds ``config.yaml``, the resolved config that ran
  (``kdistill train FOLDER/config.yaml`` repeats it), and ``train.log``, the
  run's log lines.

``--overwrite`` reaches the teacher lookups inside schemes through
:func:`overwriting`, a context that :func:`~kdistill.schemes.run_experiment`
sets for the whole command.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kdistill.config import ExperimentConfig, dump_config
from kdistill.errors import CheckpointError, RunExistsError, shorten
from kdistill.io import atomic_write_text, output_error
from kdistill.train.checkpoint import read_checkpoint_metadata

RUN_CONFIG = "config.yaml"
RUN_LOG = "train.log"

# notes about run folders (a teacher reused or resumed): the CLI shows them without --verbose
notes = logging.getLogger("kdistill.runs")

_overwrite: contextvars.ContextVar[bool] = contextvars.ContextVar("kdistill_overwrite", default=False)


@contextlib.contextmanager
def overwriting(allowed: bool = True) -> Iterator[None]:
    """Within the block, runs may replace what earlier runs left (``--overwrite``)."""
    token = _overwrite.set(allowed)
    try:
        yield
    finally:
        _overwrite.reset(token)


def overwrite_allowed() -> bool:
    """Whether the current command was given ``--overwrite`` (see :func:`overwriting`)."""
    return _overwrite.get()


@dataclass(frozen=True)
class EarlierRun:
    """What ``folder/last.safetensors`` says about the run that wrote it."""

    folder: Path
    role: str | None
    epoch: int | None       # the last finished epoch, counted from 0
    epochs: int | None      # the length of that run's schedule
    finished: bool

    def describe(self) -> str:
        who = self.role or "model"
        if self.finished:
            return f"a finished {who} run"
        if self.epoch is not None and self.epochs is not None:
            return f"an unfinished {who} run (stopped after epoch {self.epoch + 1} of {self.epochs})"
        return f"an unfinished {who} run"


def earlier_run(folder: str | Path) -> EarlierRun | None:
    """The run an earlier process left in ``folder``, or ``None`` when it holds none."""
    folder = Path(folder)
    last = folder / "last.safetensors"
    if not last.is_file():
        return None
    try:
        meta = read_checkpoint_metadata(last)
    except CheckpointError:  # unreadable: still a file that a new run would replace
        return EarlierRun(folder, None, None, None, finished=False)
    epoch = meta.get("epoch") if isinstance(meta.get("epoch"), int) else None
    epochs = (meta.get("train") or {}).get("epochs")
    epochs = epochs if isinstance(epochs, int) else None
    # its own checkpoint says so, not metrics.json: a replaced run's old metrics may still be there
    done = epoch is not None and epochs is not None and epoch + 1 >= epochs
    role = meta.get("role") if isinstance(meta.get("role"), str) else None
    return EarlierRun(folder, role, epoch, epochs, finished=done)


def student_folders(out: str | Path) -> list[Path]:
    """The folders under a distillation output folder that hold student runs (``student/``, ``*/student/``)."""
    out = Path(out)
    found = [out / "student"] + sorted(p.parent for p in out.glob("*/student/last.safetensors"))
    return [folder for folder in found if (folder / "last.safetensors").is_file()]


def refuse_earlier_runs(folders: list[Path], *, resume: str | Path | None = None,
                        overwrite: bool = False) -> None:
    """Raise :class:`RunExistsError` when a folder a new run will write holds an earlier run.

    Nothing is refused under ``overwrite``; the folder that ``resume``
    continues is the run being continued, not an earlier one.
    """
    if overwrite:
        return
    resumed = Path(resume).resolve().parent if resume is not None else None
    for folder in folders:
        run = earlier_run(folder)
        if run is None or folder.resolve() == resumed:
            continue
        choices = "pass --overwrite to replace it, or --output-dir (-o) NEW_FOLDER to keep both"
        if not run.finished:
            choices = f"pass --resume {shorten(folder / 'last.safetensors', 200)} to continue it, " + choices
        raise RunExistsError(f"'{shorten(folder, 200)}' already holds {run.describe()}, and kdistill never "
                             f"writes over a run: {choices}.", path=folder)


@contextlib.contextmanager
def recorded_run(folder: Path, cfg: ExperimentConfig, *, append: bool = False) -> Iterator[None]:
    """Write ``folder/config.yaml`` and copy the ``kdistill`` log lines into ``folder/train.log`` meanwhile.

    The log gets what the ``kdistill`` logger emits: the command sets it to
    INFO (epoch lines, notes, warnings); a Python caller's logging setup
    decides. A resumed run (``append``) adds to the log of the run it
    continues; any other run starts a new one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RUN_CONFIG, dump_config(cfg), "run config")
    try:
        handler = logging.FileHandler(folder / RUN_LOG, mode="a" if append else "w", encoding="utf-8")
    except OSError as error:
        raise output_error(folder / RUN_LOG, "run log", error) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("kdistill")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
