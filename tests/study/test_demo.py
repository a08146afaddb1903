"""The main job on the embedded data set: files written, numbers consistent with the models."""

import json

import pytest

from kdistill.study.demo import demo_config, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo("digits", seeds=1, out_dir=out, progress=False)


def test_demo_writes_table_and_plot(demo):
    for key in ("json", "csv", "markdown", "plot"):
        assert demo.files[key].exists()
    assert demo.files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(demo.files["json"].read_text())["rows"]
    assert [r["role"] for r in rows] == ["teacher", "student alone", "distilled student"]
    markdown = demo.files["markdown"].read_text()
    assert "distilled student" in markdown and "mlp-medium" in markdown


def test_demo_numbers_are_consistent(demo):
    from kdistill.eval import parameter_count
    from kdistill.models import create_model

    teacher, alone, distilled = demo.rows
    assert teacher["params"] == parameter_count(create_model("cnn-deep", (1, 8, 8), 10))
    assert alone["params"] == distilled["params"] == parameter_count(create_model("mlp-medium", (1, 8, 8), 10))
    for row in demo.rows:
        assert 0.5 < row["accuracy"] <= 1.0  # far above chance (0.1) after real training
        assert row["errors"] == pytest.approx((1 - row["accuracy"]) * row["n_test"])
        assert row["size_bytes"] > 4 * row["params"]
    assert teacher["size_bytes"] > 4 * alone["size_bytes"]
    assert 0 <= distilled["agreement"] <= 1 and distilled["kl"] >= 0


def test_unknown_demo_dataset_is_a_config_error():
    from kdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="digits"):
        demo_config("cifar-100")
