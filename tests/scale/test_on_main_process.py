"""on_main_process under 2 gloo processes: rank 0 computes once, every rank gets the result or the error."""

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdistill.errors import KDistillError
from kdistill.train.distributed import on_main_process

CASES = ("value", "user-error", "bug", "slow")


def worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    # the job's own group gives up after 5 seconds; waiting for rank 0 must not be bound by it
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=5))
    out = Path(out_dir)
    results = {}
    for case in CASES:
        def compute(case: str = case) -> dict:
            with open(out / "calls.log", "a") as calls:  # who computed, and for which case
                calls.write(f"{rank} {case}\n")
            if case == "user-error":
                raise KDistillError("the test split has 3 classes, the model 10")
            if case == "bug":
                raise ValueError("an internal mistake")
            if case == "slow":  # longer than the job group's timeout
                time.sleep(7)
                return {"accuracy": 0.5}
            return {"accuracy": 0.8125, "curve": [1.5, float("nan")], "name": "kd"}

        try:
            value = on_main_process(compute)
            results[case] = {"value": json.dumps(value)}
        except KDistillError as error:
            results[case] = {"raised": "KDistillError", "message": str(error)}
        except Exception as error:  # noqa: BLE001 - the test records which error each rank saw
            results[case] = {"raised": type(error).__name__, "message": str(error)}
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_rank_zero_computes_once_and_every_rank_receives_its_result_or_error(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(tmp_path / "init"), str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    for proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
    calls = (tmp_path / "calls.log").read_text().split("\n")
    assert [c for c in calls if c] == [f"0 {case}" for case in CASES]  # rank 0 alone, once per case
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))

    assert zero["value"] == one["value"]
    assert json.loads(one["value"]["value"].replace("NaN", "null")) == {"accuracy": 0.8125, "curve": [1.5, None],
                                                               "name": "kd"}
    # a user's mistake: the same message, and the same exit code, on every rank
    assert zero["user-error"] == one["user-error"] == {
        "raised": "KDistillError", "message": "the test split has 3 classes, the model 10"}
    # anything else: rank 0 raises it, the others say what rank 0 raised instead of waiting for ever
    assert zero["bug"] == {"raised": "ValueError", "message": "an internal mistake"}
    assert one["bug"]["raised"] == "RuntimeError"
    assert "rank 0 failed (ValueError): an internal mistake" in one["bug"]["message"]
    assert zero["slow"] == one["slow"] == {"value": '{"accuracy": 0.5}'}


def test_one_process_just_computes():
    assert on_main_process(lambda: {"accuracy": 1.0}) == {"accuracy": 1.0}
    with pytest.raises(KDistillError, match="bad"):
        on_main_process(lambda: (_ for _ in ()).throw(KDistillError("bad")))


if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
