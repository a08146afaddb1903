"""The consistent-teaching benchmark's verdicts: paired gains per seed, the target, and the validation split."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))
import augment_kd  # noqa: E402  (the benchmarks folder is scripts, not a package)


def run(test: float, val: float) -> dict:
    return {"best": {"accuracy": test}, "val_accuracy_best": val}


def test_the_target_is_met_only_when_the_paired_gain_beats_twice_the_larger_spread():
    by_row = {"kd-trivial": {0: run(0.885, 0.89), 1: run(0.888, 0.892), 2: run(0.887, 0.90)},
              "alone-trivial": {0: run(0.875, 0.88), 1: run(0.872, 0.875), 2: run(0.873, 0.883)}}
    (line,) = augment_kd.verdicts(by_row)
    # gains +1.0, +1.6, +1.4 points: mean 1.33, stdev 0.31; the alone spread 0.15: 2 x 0.31 = 0.61 < 1.33
    assert "3 seeds, paired: +1.33 ± 0.31 points (per seed +1.00, +1.60, +1.40" in line
    assert "target (gain > 2 x the larger spread, 0.61) **met**" in line
    assert "On the validation split: +1.47 ± 0.40 points." in line  # +1.0, +1.7, +1.7

    by_row["alone-trivial"][2] = run(0.887, 0.90)  # seed 2 gains nothing: mean +0.87, stdev 0.81
    (line,) = augment_kd.verdicts(by_row)
    assert "**NOT met**" in line


def test_one_seed_has_no_spread_and_no_verdict():
    (line,) = augment_kd.verdicts({"kd-aug": {0: run(0.9, 0.9)}, "alone-aug": {0: run(0.89, 0.89)}})
    assert line == "* KD gain with crop/flip, seed 0 only: +1.00 points (no spread yet)."
