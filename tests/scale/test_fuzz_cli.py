"""Fuzzing the command line: whatever a user types, `kdistill` answers 0 or 2, never a traceback.

A seeded generator draws 1,200 argument lists: every subcommand (and none), real
and garbage flags, ``--set`` overrides of real keys with odd values (huge and
negative numbers, inf, unicode, YAML syntax, lists), config files that are
missing, folders, binary, alias bombs or fine, checkpoints that are good,
damaged or crafted, and output places that are files or too long. Each goes
through :func:`kdistill.cli.main.main` in this process; argparse's
``SystemExit(2)`` counts as 2. Configs that validate stay tiny (sklearn digits,
at most 64 training and 32 test samples, at most 2 epochs, small zoo models),
so the whole test takes well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import random
import time
import traceback
from pathlib import Path

import pytest
import torch

from kdistill.cli.main import main

# KDISTILL_FUZZ_SEED / KDISTILL_FUZZ_CASES explore further by hand; CI runs the fixed draw
CASES = int(os.environ.get("KDISTILL_FUZZ_CASES", 1200))
SEED = int(os.environ.get("KDISTILL_FUZZ_SEED", 20240611))

# values that are tiny when valid: a config that validates must train in well under a second
EPOCHS = [1, 2, 0, -1, 10**9, 10**40, "two", 1.5, None, True, "2", [1]]
LIMITS_TRAIN = [16, 32, 64, 1, 2, 0, -3, 10**30, "all", 1e400, None]
LIMITS_TEST = [8, 16, 32, 1, 0, -1, 10**25, "x", None]
MODELS = ["mlp-simple", "cnn-simple", "resnet-simple", "hinton-student", "bilstm", "text-cnn",
          "no-such-net", "", "MLP-SIMPLE", "mlp-simple\u200b", "\u00e9l\u00e8ve", "mlp-" + "x" * 300]
METHODS = ["kd", "crd", "dkd", "at", "fitnets", "nst", "pkt", "rkd", "sp", "regression", "hidden-states",
           "attention-maps", "born-again", "takd", "dml", "multi-teacher", "noisy-student", "early-stop",
           "transfer", "nope", "", "KD"]
# sst2 is left out: the shared SST-2 files are found by name, and tokenising 67k phrases is slow
DATASETS = ["digits", "mnist", "fashion-mnist", "csv", "table", "text-csv", "image-folder", "nope", "",
            "d\u00efgits"]
ODD = [None, True, False, 0, -1, 1, 2**63, -(2**63), 10**100, 1e308, float("inf"), float("nan"), 1e-300,
       "", " ", "off", "on", "yes", "none", "\u2603", "\U0001F600" * 3, "a" * 5000, "[1, 2", "{a: b",
       "*alias", "&anchor x", "!!python/name:os.system", "!!binary x", "!!float abc", "'quoted'",
       "a: b", "- x", "%TAG", "\\x00", "0x1F", "1_000", ".inf", "-.nan", "~", "null", [1, 2], {"k": "v"},
       [[[]]], {"": None}]
KEYS = {
    "train.epochs": EPOCHS, "train.batch_size": [1, 8, 32, 64, 0, -8, 10**12, "big", 2.5],
    "train.seed": [0, 7, -1, 2**32, 2**64, 10**30, "s", 1.0],
    "train.device": ["cpu", "auto", "cuda", "cuda:0", "cuda:abc", "cuda:-1", "cuda:0:1", "gpu", "mps", "", "CPU"],
    "train.amp": ["off", "on", "auto", "bf16", "fp8", "no", "yes", True],
    "train.val_fraction": [0.0, 0.1, 0.5, 0.99, 1, -0.1, float("nan"), "half"],
    "train.grad_clip": [None, 1.0, 0, -1, float("inf")],
    "train.label_smoothing": [0.0, 0.1, 0.99, 1, -1],
    "train.optimizer.name": ["sgd", "adam", "adamw", "lbfgs", "", 3],
    "train.optimizer.lr": [1e-3, 0.1, 10.0, 1e10, 0, -1, float("inf"), "fast"],
    "train.scheduler.name": ["constant", "cosine", "onecycle", "step", "off", "warp"],
    "train.scheduler.warmup_epochs": [0, 0.5, 1, 2, 1e9, -1],
    "train.scheduler.step_epochs": [1, 0, 10**9],
    "train.batch_scope": ["global", "per_rank", "x"], "train.lr_scaling": ["none", "linear", "sqrt", "off"],
    "train.keep_epochs": [True, False, "maybe"], "train.compile": [False, "no"],
    "train.base_batch_size": [None, 16, 0, 10**20],
    "distill.alpha": [0, 0.5, 1, 1.5, -0.1, float("nan"), "a"],
    "distill.temperature": [1, 4, 1e-30, 1e30, 0, -2, float("inf")],
    "distill.method": METHODS, "distill.cache": ["auto", "device", "memmap", "off", "on", "no", "disk"],
    "distill.teacher_precision": ["same", "bf16", "off", "fp16"],
    "distill.methods": [[], [{"name": "crd"}], [{"name": "kd"}, {"name": "dkd", "weight": 0.5}], "crd",
                        [{"weight": 1}], [{"name": "at", "options": {"pairs": 3}}]],
    "distill.scheme": [None, {"name": "born-again", "options": {"generations": 2}}, {"name": "takd"},
                       {"name": "nope"}, "born-again", {"name": "dml", "options": {"peers": 10**9}}],
    "distill.scheme.name": METHODS[11:], "distill.scheme.options.generations": [1, 2, 0, -1, 10**9, "x"],
    "distill.scheme.options.peers": [1, 2, 0, 10**9], "distill.scheme.options.nope": [1],
    "distill.methods.0": [{"name": "crd", "options": {"feat_dim": 0}}, {"name": "fitnets", "options": {"pairs": "x"}},
                          {"name": "rkd", "weight": -1}, {"name": "dkd", "options": {"beta": float("inf")}}],
    "student.model": MODELS, "teacher.model": MODELS,
    "student.options.hidden": [[8], [], [0], [-1], [10**9], "8", [8] * 3, [[8]]],
    "student.options.widths": [[4, 8], [10**7], "x", []], "student.options.dropout": [0.0, 0.5, 1, -1],
    "teacher.options.depths": [[1, 1, 1], [1], [10**7, 1, 1]], "teacher.options.nope": [1],
    "teacher.checkpoint": ["CKPT", "MISSING", "DIR", "GARBAGE", "TORCH_PICKLE", "CRAFTED", ""],
    "data.dataset": DATASETS, "data.limit_train": LIMITS_TRAIN, "data.limit_test": LIMITS_TEST,
    "data.download": [False, "no"], "data.data_dir": ["MISSING", "FILE", "DIR", None, ""],
    "data.options.path": ["GOODCSV", "BADCSV", "HEADERCSV", "MISSING", "DIR", "GARBAGE", 3, None],
    "data.options.normalize": [True, False, "yes", 2], "data.options.delimiter": [",", ";;", 4, ""],
    "data.options.label_column": ["label", "nope", 3], "data.options.nope": [1],
    "data.options.image_size": [8, 10**6, [8, 8], [0, 1]], "data.options.test_fraction": [0.2, 0, 2],
    "data.augment.jitter": [0, 1, 2, 9, -1], "teacher_augment": [{"jitter": 1}, "x"],
    "teacher_train": [None, {"epochs": 1}, {"epochs": 10**9}, "fast", {"seed": -1}],
    "tune.pruner": ["median", "none", "off", "nope"], "tune.startup_trials": [0, 1, -1],
    "tune.search": [None, {}, {"distill.alpha": {"low": 0.1, "high": 0.9}},
                    {"distill.alpha": {"low": 1, "high": 0}}, {"nope": {"choices": []}}, "x"],
    "name": ["exp", "", "x" * 300, "a/b", "\u2603", "..", 3],
    "output_dir": ["OUT", "FILE", "LONG", "PROC"],
    "nope": [1], "train.nope": [1], "": [1], "train..epochs": [1], ".": [1],
}
TOKENS = ["--set", "-o", "--output-dir", "--device", "--epochs", "--seed", "--data-dir", "--resume", "--role",
          "--method", "--teacher", "--no-progress", "--trials", "--storage", "--timeout", "--json", "--dataset",
          "--data-option", "--format", "--atol", "--quick", "--fresh", "--seeds", "-v", "--help", "--version",
          "-x", "--", "=", "train.epochs=1", "\u2603", "", " ", "-1", "1e999", "CONFIG", "CKPT"]


def _yaml_scalar(value):
    """How a value is written after ``--set KEY=``: mostly YAML, sometimes raw text."""
    if isinstance(value, str):
        return value
    return json.dumps(value) if not isinstance(value, float) or value == value and abs(value) != float("inf") \
        else {float("inf"): ".inf", float("-inf"): "-.inf"}.get(value, ".nan")


class Places:
    """Files and folders the generated arguments point at, made once per test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"
        self.file = root / "a-file"
        self.file.write_text("not a folder\n")
        self.dir = root / "a-dir"
        self.dir.mkdir()
        self.missing = root / "missing" / "nothing.yaml"
        self.garbage = root / "garbage.safetensors"
        self.garbage.write_bytes(b"\x00\xff" * 50)
        self.binary = root / "binary.yaml"
        self.binary.write_bytes(bytes(range(256)))
        self.good_csv = root / "good.csv"
        self.good_csv.write_text("a,b,label\n" + "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(24)))
        self.bad_csv = root / "bad.csv"
        self.bad_csv.write_text("a,a,label\n1,2,nan\n3,4,\n")
        self.header_csv = root / "header.csv"
        self.header_csv.write_text("a,label\n")
        self.torch_pickle = root / "teacher.pt"
        torch.save([1, 2, 3], self.torch_pickle)
        self.bomb = root / "bomb.yaml"
        lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
        lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
        self.bomb.write_text("\n".join(lines) + "\nname: *a8\n")
        self.config = self.write_config("tiny.yaml", {})
        self.checkpoint = self.make_checkpoint()
        self.crafted = self.make_crafted()

    def write_config(self, name: str, extra: dict) -> Path:
        base = {"data": {"dataset": "digits", "limit_train": 64, "limit_test": 32, "download": False},
                "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple"},
                "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "progress": False},
                "output_dir": str(self.out)}
        for key, value in extra.items():
            base[key] = value
        path = self.root / name
        path.write_text(json.dumps(base))  # JSON is YAML
        return path

    def make_checkpoint(self) -> Path:
        code = main(["train", str(self.config), "--role", "student", "--no-progress",
                     "-o", str(self.root / "trained")])
        assert code == 0
        return self.root / "trained" / "student" / "best.safetensors"

    def make_crafted(self) -> Path:
        from safetensors.torch import save_file

        from kdistill.train import read_checkpoint
        from kdistill.train.checkpoint import META_KEY

        tensors, meta = read_checkpoint(self.checkpoint)
        meta.update(epoch="3", history={"x": 1}, data={"dataset": "csv", "options": {"path": "/etc/passwd"},
                                                        "files": []})
        tensors["model.features.0.0.weight"] = tensors["model.features.0.0.weight"].half()
        path = self.root / "crafted.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), {META_KEY: json.dumps(meta)})
        return path

    def resolve(self, token):
        """Placeholders (``CKPT``, ``FILE``, ...) to paths; anything else as it is."""
        table = {
            "CKPT": self.checkpoint, "CRAFTED": self.crafted, "MISSING": self.missing, "DIR": self.dir,
            "FILE": self.file, "GARBAGE": self.garbage, "TORCH_PICKLE": self.torch_pickle,
            "GOODCSV": self.good_csv, "BADCSV": self.bad_csv, "HEADERCSV": self.header_csv,
            "OUT": self.out, "LONG": self.root / ("n" * 300), "PROC": Path("/proc/kdistill-fuzz"),
            "CONFIG": self.config, "BOMB": self.bomb, "BINARY": self.binary,
        }
        return str(table[token]) if isinstance(token, str) and token in table else token


def _override(rng: random.Random, places: Places) -> list[str]:
    key = rng.choice(list(KEYS))
    value = places.resolve(rng.choice(KEYS[key] + ([rng.choice(ODD)] if rng.random() < 0.25 else [])))
    return ["--set", f"{key}={_yaml_scalar(value)}"]


def _config_path(rng: random.Random, places: Places, case: int) -> str:
    roll = rng.random()
    if roll < 0.55:
        return str(places.config)
    if roll < 0.75:  # a config file with odd sections written out
        extra = {}
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(list(KEYS))
            top, _, rest = key.partition(".")
            value = places.resolve(rng.choice(KEYS[key]))
            extra[top] = value if not rest else _nest(rest, value)
        return str(places.write_config(f"case{case}.yaml", extra))
    return str(places.resolve(rng.choice(["MISSING", "DIR", "FILE", "BINARY", "BOMB", "GARBAGE"])
                              if rng.random() < 0.9 else rng.choice(["/dev/null", "", "-", "\u2603.yaml"])))


def _nest(dotted: str, value):
    out = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _training_args(rng: random.Random, places: Places, command: str, case: int) -> list[str]:
    args = [command, _config_path(rng, places, case)]
    if rng.random() < 0.95:
        args.append("--no-progress")
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        args += _override(rng, places)
    flags = {
        "--epochs": lambda: str(rng.choice([1, 2, 0, -1, 10**12])),
        "--seed": lambda: str(rng.choice([0, 3, -1, 2**40, 10**30])),
        "--device": lambda: rng.choice(["cpu", "auto", "cuda", "gpu", "cuda:x", "mps", ""]),
        "--output-dir": lambda: places.resolve(rng.choice(["OUT", "FILE", "LONG", "PROC"])),
        "--data-dir": lambda: places.resolve(rng.choice(["MISSING", "FILE", "DIR"])),
    }
    if command in ("train", "distill"):
        flags["--resume"] = lambda: places.resolve(rng.choice(["CKPT", "MISSING", "GARBAGE", "CRAFTED", "DIR"]))
    if command == "train":
        flags["--role"] = lambda: rng.choice(["teacher", "student", "both"])
    if command == "distill":
        flags["--method"] = lambda: rng.choice(METHODS)
        flags["--teacher"] = lambda: places.resolve(rng.choice(["CKPT", "MISSING", "GARBAGE", "CRAFTED",
                                                                 "TORCH_PICKLE"]))
    if command == "tune":
        flags["--trials"] = lambda: str(rng.choice([0, 1, -1, "x"]))
        flags["--storage"] = lambda: rng.choice(["nope://x", "sqlite:////proc/x/tune.db", ""])
        flags["--timeout"] = lambda: str(rng.choice([0.01, -1, "soon"]))
    for flag in rng.sample(list(flags), k=min(len(flags), rng.choice([0, 1, 1, 2, 3]))):
        args += [flag, flags[flag]()]
    if command == "tune" and "--trials" not in args:
        args += ["--trials", "1"]  # the default of 20 trials is a real search, not a fuzz case
    return args


def generate(rng: random.Random, places: Places, case: int) -> list[str]:
    roll = rng.random()
    if roll < 0.30:
        return _training_args(rng, places, "train", case)
    if roll < 0.55:
        return _training_args(rng, places, "distill", case)
    if roll < 0.62:
        args = _training_args(rng, places, "tune", case)
        # a search that validates still trains a teacher and a trial: keep most of them failing early
        return args if rng.random() < 0.3 else args + _override(rng, places)
    if roll < 0.74:
        args = ["evaluate", places.resolve(rng.choice(["CKPT", "CKPT", "CRAFTED", "MISSING", "GARBAGE", "DIR",
                                                       "TORCH_PICKLE", "FILE"]))]
        if rng.random() < 0.4:
            args += ["--dataset", rng.choice(DATASETS)]
        if rng.random() < 0.3:
            key = rng.choice(["path", "normalize", "nope", "", "a.b"])
            args += ["--data-option", f"{key}={_yaml_scalar(places.resolve(rng.choice(KEYS['data.options.path'])))}"]
        if rng.random() < 0.2:
            args += ["--teacher", places.resolve(rng.choice(["CKPT", "MISSING", "CRAFTED"]))]
        if rng.random() < 0.2:
            args += ["--data-dir", places.resolve(rng.choice(["MISSING", "FILE", "DIR"]))]
        if rng.random() < 0.5:
            args.append("--json")
        return args
    if roll < 0.81:
        args = ["export", places.resolve(rng.choice(["CKPT", "CRAFTED", "MISSING", "GARBAGE", "DIR"]))]
        if rng.random() < 0.9:
            args += ["--format", rng.choice(["onnx", "torchscript", "safetensors", "tflite", ""])]
        if rng.random() < 0.6:
            args += ["--output", places.resolve(rng.choice(["FILE", "DIR", "LONG", "PROC", "OUT"]))
                     + rng.choice(["", "/model.onnx", "/x/y.pt"])]
        if rng.random() < 0.2:
            args += ["--atol", str(rng.choice([0, -1, 1e-9, "tight"]))]
        return args
    if roll < 0.86:
        # a demo that validates trains on all of digits for seconds: every case here fails early
        bad = rng.choice([["--seeds", str(rng.choice([0, -1, -(10**9)]))],
                          ["--dataset", rng.choice(["nope", "", "csv", "image-folder", "\u2603"])],
                          ["--device", rng.choice(["gpu", "cuda:x", "CPU", ""])]])
        extra = rng.choice([[], ["-o", places.resolve(rng.choice(["FILE", "LONG", "OUT"]))], ["--no-progress"],
                            ["--data-dir", places.resolve("MISSING")]])
        return ["demo", *bad, *extra]
    if roll < 0.90:
        args = ["study", places.resolve(rng.choice(["CONFIG", "MISSING", "DIR", "BINARY", "BOMB", "GARBAGE"]))]
        return args + rng.sample(["--quick", "--fresh", "--no-progress"], k=rng.randint(0, 2))
    # anything at all
    return [places.resolve(rng.choice(TOKENS + ["train", "distill", "evaluate", "nope"]))
            for _ in range(rng.randint(0, 6))]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse: 2 for a usage error, 0 for --help / --version
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)


@pytest.fixture()
def fuzz_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative defaults (runs/<name>, kdistill-out/) land here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KDISTILL_DATA", str(tmp_path / "no-data"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny runs: threads cost more than they give
    yield Places(tmp_path)
    torch.set_num_threads(threads)


def test_fuzzed_command_lines_exit_0_or_2(fuzz_env, capsys):
    rng = random.Random(SEED)
    escapes: dict[str, tuple[list[str], str]] = {}
    bad_codes: list[tuple[list[str], int]] = []
    counts = {0: 0, 2: 0}
    started = time.perf_counter()
    for case in range(CASES):
        argv = [str(a) for a in generate(rng, fuzz_env, case)]
        try:
            code = run(argv)
        except Exception as error:  # the test's whole point: record any escape, with where it came from
            frames = [f for f in traceback.extract_tb(error.__traceback__) if "/kdistill/" in f.filename]
            where = f"{frames[-1].filename.split('/kdistill/')[-1]}:{frames[-1].lineno}" if frames else "?"
            key = f"{type(error).__name__} at {where}"
            escapes.setdefault(key, (argv, "".join(traceback.format_exception(error))[-1500:]))
            continue
        finally:
            captured = capsys.readouterr()
        if code not in (0, 2):
            bad_codes.append((argv, code))
            continue
        counts[code] += 1
        if code == 2:
            assert captured.err.strip(), f"exit 2 without a message: {argv}"
            assert "Traceback" not in captured.err, argv
    seconds = time.perf_counter() - started
    report = "\n\n".join(f"{key}\n  argv: {argv!r}\n{tb}" for key, (argv, tb) in escapes.items())
    assert not escapes, f"{len(escapes)} kinds of exception escaped main():\n{report}"
    assert not bad_codes, bad_codes[:5]
    # both outcomes occur: the generator reaches real training as well as every kind of refusal
    assert counts[0] >= 20 and counts[2] >= CASES // 2, counts
    print(f"{CASES} command lines in {seconds:.1f}s: {counts}")
