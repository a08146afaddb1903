"""The methods benchmark's report: the best method is chosen on validation, and sections without run
records say so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))
import methods_report  # noqa: E402  (the benchmarks folder is scripts, not a package)


def record(row: str, seed: int, test: float, val: float) -> dict:
    return {"dataset": "mnist", "student": "small", "column": "shared" if row == "alone" else "tuned",
            "row": row, "label": row, "settings": "-", "seed": seed, "accuracy": test, "last_accuracy": test,
            "agreement": 0.9, "kl": 0.1, "cpu_s": 1.0, "wall_s": 1.0, "best_epoch": 1,
            "val_history": [0.5, val], "epochs": 15}


def test_best_method_is_chosen_on_validation_not_on_test():
    # "lucky" has the larger test gain, "kd" the larger validation gain: the pick must be kd
    records = [record(row, seed, test, val) for seed in (0, 1, 2) for row, test, val in
               [("alone", 0.90, 0.90), ("kd", 0.91, 0.93), ("lucky", 0.95, 0.91)]]
    lines = methods_report.targets(methods_report.tables(records), {"small": 15})
    assert len(lines) == 1
    assert "best method on the validation split **kd** (+3.00 validation points" in lines[0]
    assert "on the test set +1.00 ± 0.00 points" in lines[0]


def test_a_section_without_records_is_marked_and_a_record_replaces_it(tmp_path):
    out = tmp_path / "benchmarks"
    out.mkdir()
    (out / "methods-schedule.unrecorded.md").write_text("## Schedule\n\nold numbers 1.23\n")
    section = methods_report._section(out, "schedule", lambda rec: ["from the record"])
    assert section[0] == "## Schedule" and "No committed run records" in section[2]
    assert "old numbers 1.23" in section
    (out / "methods-schedule.json").write_text(json.dumps({"path": "x", "runs": []}))
    assert methods_report._section(out, "schedule", lambda rec: ["from the record"]) == ["from the record"]


def test_an_empty_work_folder_keeps_the_committed_records(tmp_path):
    out = tmp_path / "docs" / "benchmarks"
    out.mkdir(parents=True)
    committed = {"commands": {}, "machine": "m", "teachers": {}, "tuning": [], "runs": [record("alone", 0, 0.9, 0.9)]}
    (out / "methods.json").write_text(json.dumps(committed))
    methods_report.export_records(tmp_path / "no-work", ["mnist"], out, "python benchmarks/methods.py")
    assert json.loads((out / "methods.json").read_text()) == committed
