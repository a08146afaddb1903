"""Places results cannot be written end in an OutputError naming the path and the reason, and
no temporary file stays behind; running out of memory exits 2 with advice, like a user mistake."""

import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from kdistill.cli.main import main
from kdistill.errors import KDistillError, OutputError
from kdistill.io import (
    atomic_write_bytes,
    atomic_write_text,
    check_writable_dir,
    ensure_writable_dir,
)
from kdistill.train import save_checkpoint


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_output_error_is_a_kdistill_error_and_an_os_error():
    assert issubclass(OutputError, KDistillError) and issubclass(OutputError, OSError)


def test_ensure_writable_dir_creates_and_checks(tmp_path):
    target = tmp_path / "a" / "b"
    assert ensure_writable_dir(target) == target and target.is_dir()
    assert not leftovers(target)


def test_the_dry_run_check_creates_nothing(tmp_path):
    check_writable_dir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())
    file = tmp_path / "taken"
    file.write_text("x")
    with pytest.raises(OutputError, match="'taken' is a file, not a folder|taken' is a file"):
        check_writable_dir(file / "run")
    with pytest.raises(OutputError, match="a name in the path is too long"):
        check_writable_dir(tmp_path / ("n" * 300) / "teacher")
    if Path("/proc/self").is_dir():
        with pytest.raises(OutputError, match="/proc/kdistill-run"):
            check_writable_dir("/proc/kdistill-run")


def test_a_path_that_is_a_file(tmp_path):
    file = tmp_path / "taken"
    file.write_text("x")
    with pytest.raises(OutputError, match=f"'{file}': it is a file, not a folder"):
        ensure_writable_dir(file)
    with pytest.raises(OutputError, match="a part of the path is a file"):
        ensure_writable_dir(file / "sub")
    with pytest.raises(OutputError, match="a file stands where a folder is needed"):
        atomic_write_text(file / "metrics.json", "{}")
    with pytest.raises(OutputError, match="it is a folder"):
        atomic_write_text(tmp_path, "{}")
    assert not leftovers(tmp_path)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_path_under_proc():
    with pytest.raises(OutputError, match="Cannot write output folder '/proc/kdistill-run'"):
        ensure_writable_dir("/proc/kdistill-run")
    with pytest.raises(OutputError, match="/proc/kdistill-run/best.safetensors"):
        atomic_write_bytes("/proc/kdistill-run/best.safetensors", b"x")


def test_a_name_that_is_too_long(tmp_path):
    with pytest.raises(OutputError, match="a name in the path is too long"):
        ensure_writable_dir(tmp_path / ("n" * 300))
    with pytest.raises(OutputError, match="a name in the path is too long"):
        atomic_write_text(tmp_path / ("n" * 300 + ".json"), "{}")


def test_a_read_only_folder(tmp_path, monkeypatch):
    # root (who runs CI) may write anywhere, so the error a read-only mount gives is simulated
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match="the file system is read-only; choose a writable folder"):
        ensure_writable_dir(tmp_path / "out")
    with pytest.raises(OutputError, match="read-only"):
        atomic_write_text(tmp_path / "metrics.json", "{}")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="permission denied"):
        atomic_write_text(tmp_path / "metrics.json", "{}")


def test_a_full_disk_leaves_no_temp_file_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "best.safetensors"
    target.write_bytes(b"the previous, complete checkpoint")
    real_write = os.write
    calls = []

    def full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:3])  # a partial write first, as a filling disk does
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutputError, match=f"Cannot write file '{target}': the disk is full"):
        atomic_write_bytes(target, b"x" * 10_000)
    assert target.read_bytes() == b"the previous, complete checkpoint"
    assert not leftovers(tmp_path)
    model = nn.Linear(2, 2)
    with pytest.raises(OutputError, match="Cannot write file .*last.safetensors.*the disk is full"):
        save_checkpoint(tmp_path / "last.safetensors", {"model": model}, {"epoch": 0})
    assert not leftovers(tmp_path) and not (tmp_path / "last.safetensors").exists()


def test_fsync_failure_is_an_output_error(tmp_path, monkeypatch):
    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OutputError, match="input/output error"):
        atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert not leftovers(tmp_path)


def tiny_config(tmp_path, output_dir):
    path = tmp_path / "tiny.yaml"
    path.write_text("data: {dataset: digits, limit_train: 64, limit_test: 32}\n"
                    "student: {model: mlp-simple}\n"
                    f"train: {{epochs: 1, batch_size: 32, device: cpu}}\noutput_dir: '{output_dir}'\n")
    return path


def test_cli_reports_an_unwritable_output_place(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["train", str(tiny_config(tmp_path, blocker)), "--role", "student", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("kdistill: error:") and str(blocker) in err and "Traceback" not in err


@pytest.mark.parametrize("error, words", [
    (MemoryError(), "Out of memory: "),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 256000000000 bytes."), "Out of memory: "),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "Out of memory on the GPU"),
])
def test_running_out_of_memory_exits_2_with_advice(tmp_path, monkeypatch, capsys, error, words):
    import kdistill.cli.train as train_cli

    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(train_cli, "train_model", exhausted)
    assert main(["train", str(tiny_config(tmp_path, tmp_path / "out")), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert words in err and "batch_size" in err and "Traceback" not in err


def test_other_runtime_errors_are_still_bugs(tmp_path, monkeypatch):
    import kdistill.cli.train as train_cli

    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(train_cli, "train_model", bug)
    with pytest.raises(RuntimeError, match="mat1"):
        main(["train", str(tiny_config(tmp_path, tmp_path / "out")), "--no-progress"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_an_existing_special_file_is_never_replaced(tmp_path):
    # `export -o /dev/full` as root renamed a regular file over the device; a FIFO stands in for it here
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="it exists and is a named pipe"):
        atomic_write_bytes(fifo, b"onnx")
    assert fifo.is_fifo() and not leftovers(tmp_path)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        atomic_write_bytes(folder, b"x")
    link = tmp_path / "link.onnx"
    link.symlink_to(fifo)  # a link is judged by what it points at
    with pytest.raises(OutputError, match="named pipe"):
        atomic_write_text(link, "x")


def _student_checkpoint(tmp_path):
    from kdistill.data import load_dataset
    from kdistill.models import create_model

    data = load_dataset("digits")
    model = create_model("mlp-simple", data.input_shape, data.num_classes)
    spec = {"model": "mlp-simple", "options": {}, "input_shape": list(data.input_shape),
            "num_classes": data.num_classes}
    return save_checkpoint(tmp_path / "student.safetensors", {"model": model}, {"model_spec": spec}), model, spec


def test_export_refuses_special_outputs_nan_weights_and_a_meaningless_tolerance(tmp_path, capsys):
    path, model, spec = _student_checkpoint(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "out.safetensors")
        assert main(["export", str(path), "--format", "safetensors", "-o", str(tmp_path / "out.safetensors")]) == 2
        assert "named pipe" in capsys.readouterr().err
    for atol in ("nan", "-1", "inf"):
        assert main(["export", str(path), "--format", "onnx", "--atol", atol,
                     "-o", str(tmp_path / "m.onnx")]) == 2
        assert "must be a finite number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    broken = save_checkpoint(tmp_path / "nan.safetensors", {"model": model}, {"model_spec": spec})
    assert main(["export", str(broken), "--format", "safetensors", "-o", str(tmp_path / "nan-out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite weights" in err and "Traceback" not in err
    assert not (tmp_path / "nan-out.safetensors").exists()


def test_a_tracking_folder_that_cannot_be_written_stops_the_run_cleanly(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    config = tiny_config(tmp_path, tmp_path / "runs")
    for folder in ("/proc/tb", str(config)):  # under /proc, and a file
        assert main(["train", str(config), "--role", "student", "--set", "tracking.tensorboard=true",
                     "--set", f"tracking.dir={folder}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kdistill: error: Cannot") and "tracking folder" in err and "Traceback" not in err
