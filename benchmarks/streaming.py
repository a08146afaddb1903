"""The streaming data path: peak memory as an image folder grows, and speed against a plain DataLoader loop.

Two measurements on generated RGB image folders (64x64 PNGs: MNIST or
Fashion-MNIST images tinted onto a per-image coloured background, written
by this script under --work and never committed):

memory   peak memory of ``kdistill distill`` (the whole process tree,
         DataLoader workers included, sampled every 0.1 s from /proc) for
         folders of --sizes images, with ``data.loader: stream``; with
         --torchrun N the same under torchrun with N processes. The target:
         flat (within 15%) as the folder grows. Two sums over the tree:
         PSS (proportional set size, /proc/PID/smaps_rollup: a page shared
         by k processes counts 1/k in each), the tree's real footprint, and
         RSS, which counts a shared page once per process: a forked worker
         shares the parent's pages copy-on-write, so summed RSS counts most
         of the parent again for every worker alive (reported for
         comparison with earlier measurements, not as the footprint).
speed    images/s of kdistill's streamed distillation step (``fit`` on the
         folder's Dataset, live teacher, the same transforms and worker count)
         against a hand-written PyTorch loop over a DataLoader of the same
         Dataset, in the same process, interleaved and repeated (medians).
         The target: at least 0.95x.

    python benchmarks/streaming.py memory --sizes 10000 50000 200000 --work /tmp/streaming
    python benchmarks/streaming.py memory --sizes 10000 50000 --torchrun 2 --work /tmp/streaming
    python benchmarks/streaming.py speed --images 20000 --workers 4 --repeats 3 --work /tmp/streaming
    python benchmarks/streaming.py memory --quick --work /tmp/streaming   # a pipeline check in seconds

``--write FILE`` puts the table, the command and the device into FILE
(e.g. docs/BENCHMARKS.md) between markers; ``--json FILE`` writes the
measurements, every repeat included, with the command and the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import data_dir, device_name, write_section
from torch import nn
from torch.utils.data import DataLoader

from kdistill.config import TrainConfig
from kdistill.data import load_dataset
from kdistill.data.streaming import StreamSplits
from kdistill.distiller import Distiller
from kdistill.models import create_model
from kdistill.train import fit, resolve_device
from kdistill.train.checkpoint import atomic_write_text

START, END = "<!-- streaming:start -->", "<!-- streaming:end -->"
SIDE = 64


def generate(folder: Path, n: int, source: str = "fashion-mnist", seed: int = 0) -> Path:
    """``n`` RGB PNGs in ``folder/train/<class>/`` and ``folder/test/<class>/`` (one in ten is a test image).

    Each is a 28x28 grey image of ``source`` scaled to 64x64 and tinted onto a
    random background colour, so colour carries no label. Reused if complete.
    """
    from PIL import Image

    done = folder / f".complete-{n}"
    if done.exists():
        return folder
    images, labels = load_images(source)
    rng = np.random.default_rng(seed)
    for i in range(n):
        j = int(rng.integers(len(images)))
        grey = np.asarray(Image.fromarray(images[j]).resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32)
        background, ink = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        alpha = (grey / 255.0)[..., None]
        rgb = (background * (1 - alpha) + ink * alpha).astype(np.uint8)
        split = "test" if i % 10 == 0 else "train"
        target = folder / split / str(labels[j])
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(target / f"{i:07d}.png")
    done.touch()
    return folder


def load_images(source: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset(source, data_dir=data_dir(), download=False, normalize=False)
    images = (data.x_train[:, 0].numpy() * 255).round().astype(np.uint8)
    return images, data.y_train.numpy()


# ------------------------------------------------------------------ memory


def tree_memory(pid: int) -> tuple[int, int]:
    """Resident bytes (RSS) and proportional bytes (PSS) of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    rss = pss = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(current, []))
    return rss, pss


def peak_memory(command: list[str], env: dict[str, str]) -> tuple[int, int, float, int]:
    """Run ``command``; return its process tree's peak summed RSS and peak summed PSS (bytes), its
    seconds and its exit status."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_rss = peak_pss = 0
    while process.poll() is None:
        rss, pss = tree_memory(process.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.1)
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read().decode(errors="replace")[-2000:])
    return peak_rss, peak_pss, time.perf_counter() - started, process.returncode


def memory(args: argparse.Namespace) -> tuple[str, list[dict]]:
    rows = []
    # sizes measured before with the same command are kept (the largest folders take the longest: a killed
    # benchmark resumes at the first size it has no row for)
    done = {r["images"]: r for r in previous_rows(args)}
    for n in args.sizes:
        if n in done:
            rows.append({k: done[n][k] for k in ("images", "peak_pss_bytes", "peak_rss_bytes", "seconds", "exit")})
            print(f"{n} images: measured before, kept", flush=True)
            continue
        folder = generate(args.work / f"folder-{n}", n, args.source)
        config = args.work / f"memory-{n}.yaml"
        config.write_text(
            f"data: {{dataset: image-folder, options: {{path: {folder}}}, loader: stream, workers: {args.workers}}}\n"
            "teacher: {model: cnn-simple}\nstudent: {model: cnn-simple}\n"
            f"teacher_train: {{epochs: 1, batch_size: 128, progress: false, device: {args.device}}}\n"
            f"train: {{epochs: 1, batch_size: 128, progress: false, device: {args.device}}}\n")
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                     str(args.torchrun)] if args.torchrun else [sys.executable])
        command = [*launcher, "-m", "kdistill", "distill", str(config), "-o", str(args.work / f"run-{n}"),
                   "--overwrite"]  # the benchmark's own scratch folder, from an earlier measurement
        rss, pss, seconds, status = peak_memory(command, dict(os.environ))
        rows.append({"images": n, "peak_pss_bytes": pss, "peak_rss_bytes": rss, "seconds": seconds, "exit": status})
        if args.json is not None and not args.quick:  # the sizes measured so far; the final write adds ratios
            write_record(args, rows)
        print(f"{n} images: peak PSS {pss / 2**20:,.0f} MiB, peak summed RSS {rss / 2**20:,.0f} MiB, "
              f"{seconds:.0f} s, exit {status}", flush=True)
    base_pss, base_rss = rows[0]["peak_pss_bytes"] or 1, rows[0]["peak_rss_bytes"] or 1
    lines = ["| images | peak PSS (MiB) | vs smallest | peak summed RSS (MiB) | vs smallest | seconds | exit |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    records = [dict(r, vs_smallest=round(r["peak_pss_bytes"] / base_pss, 3),
                    rss_vs_smallest=round(r["peak_rss_bytes"] / base_rss, 3)) for r in rows]
    lines += [f"| {r['images']:,} | {r['peak_pss_bytes'] / 2**20:,.0f} | {r['peak_pss_bytes'] / base_pss:.2f}x "
              f"| {r['peak_rss_bytes'] / 2**20:,.0f} | {r['peak_rss_bytes'] / base_rss:.2f}x | {r['seconds']:.0f} "
              f"| {r['exit']} |" for r in rows]
    return "\n".join(lines), records


def previous_rows(args: argparse.Namespace) -> list[dict]:
    """The rows of ``--json`` when it was written by the same memory command (launcher, workers, source)."""
    if args.json is None or args.quick or not args.json.exists():
        return []
    record = json.loads(args.json.read_text())
    same = (record.get("torchrun", 0), record.get("workers"), record.get("source", "fashion-mnist")) == (
        args.torchrun, args.workers, args.source)
    return [r for r in record.get("rows", []) if r.get("exit") == 0] if same else []


def write_record(args: argparse.Namespace, rows: list[dict]) -> None:
    record = {"benchmark": f"streaming-{args.what}", "command": "python benchmarks/streaming.py " + " ".join(sys.argv[1:]),
              "device": device_name(resolve_device(args.device)), "python": platform.python_version(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d", time.gmtime()), "workers": args.workers,
              "torchrun": args.torchrun, "source": args.source,
              "rows": [dict(r, seconds=round(r["seconds"], 1)) if "seconds" in r else r for r in rows]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")


# ------------------------------------------------------------------ speed


def plain_loop(teacher: nn.Module, student: nn.Module, loader: DataLoader, device: torch.device) -> int:
    """One epoch of KD written by hand: the reference the streamed fit() is compared with."""
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    kl = nn.KLDivLoss(reduction="batchmean")
    seen = 0
    student.train()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        loss = 0.1 * nn.functional.cross_entropy(s, y) + 0.9 * 16 * kl(
            torch.log_softmax(s / 4, -1), torch.softmax(t / 4, -1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(x)
    return seen


def speed(args: argparse.Namespace) -> tuple[str, list[dict]]:
    device = resolve_device(args.device)
    folder = generate(args.work / f"folder-{args.images}", args.images, args.source)
    data = load_dataset("image-folder", path=str(folder), loader="stream")
    assert isinstance(data, StreamSplits)
    torch.manual_seed(0)
    teacher = create_model("cnn-simple", data.input_shape, data.num_classes).to(device).eval()
    cfg = TrainConfig(epochs=1, batch_size=128, progress=False, device=args.device, val_fraction=0.0, amp="off",
                      optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}, scheduler={"name": "constant"})
    times: dict[str, list[float]] = {"kdistill fit (stream)": [], "plain DataLoader loop": []}
    n = data.num_train
    for _ in range(args.repeats):
        student = create_model("cnn-simple", data.input_shape, data.num_classes).to(device)
        history = fit(Distiller(teacher=teacher, student=student, alpha=0.9, temperature=4.0), data, cfg,
                      cache_teacher=False, workers=args.workers)
        # the epoch's own seconds (worker start-up included, one-time set-up checks not)
        times["kdistill fit (stream)"].append(n / history.epochs[0]["seconds"])
        student = create_model("cnn-simple", data.input_shape, data.num_classes).to(device)
        loader = DataLoader(data.train, batch_size=128, shuffle=True, num_workers=args.workers,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        started = time.perf_counter()
        seen = plain_loop(teacher, student, loader, device)
        times["plain DataLoader loop"].append(seen / (time.perf_counter() - started))
    reference = statistics.median(times["plain DataLoader loop"])
    lines = ["| variant | images/s (median) | vs plain loop |", "|---|---:|---:|"]
    lines += [f"| {name} | {statistics.median(v):,.0f} | {statistics.median(v) / reference:.2f}x |"
              for name, v in times.items()]
    records = [{"variant": name, "images": n, "images_per_s": [round(x, 1) for x in v],
                "median_images_per_s": round(statistics.median(v), 1),
                "vs_plain_loop": round(statistics.median(v) / reference, 3)} for name, v in times.items()]
    return "\n".join(lines), records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["memory", "speed"])
    parser.add_argument("--work", type=Path, required=True, help="where the generated folders and runs go")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--images", type=int, default=20_000, help="speed: folder size")
    parser.add_argument("--source", choices=["mnist", "fashion-mnist"], default="fashion-mnist")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--torchrun", type=int, default=0, help="memory: N processes under torchrun")
    parser.add_argument("--quick", action="store_true", help="tiny folders: a pipeline check in seconds")
    parser.add_argument("--write", type=Path, help="put the table into this markdown file between markers")
    parser.add_argument("--json", type=Path, help="write the measurements, command and device to this JSON file "
                        "(memory: rewritten after every size; sizes it already holds for the same command are kept)")
    parser.add_argument("--section", default="", help="--write: a name that gives this table its own section "
                        "(e.g. torchrun), so that tables of different runs stand side by side")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.images, args.repeats, args.workers = [200, 400], 400, 1, min(args.workers, 1)
    args.work.mkdir(parents=True, exist_ok=True)
    table, records = memory(args) if args.what == "memory" else speed(args)
    print(table)
    command = "python benchmarks/streaming.py " + " ".join(sys.argv[1:])
    device = device_name(resolve_device(args.device))
    if args.json is not None and not args.quick:
        write_record(args, records)
    if args.write is not None and not args.quick:
        section = f"streaming-{args.what}" + (f"-{args.section}" if args.section else "")
        start, end = (marker.replace("streaming", section) for marker in (START, END))
        title = f"Streaming: {args.what}" + (f" ({args.section})" if args.section else "")
        write_section(args.write, f"### {title}\n\n`{command}` on {device}\n\n{table}\n", start, end)


if __name__ == "__main__":
    main()
