"""A config's image folder, streamed, through the whole distillation run and back through evaluate."""

import pytest
from helpers import write_colour_folder

from kdistill.config import parse_config
from kdistill.experiment import evaluate_checkpoint, load_model
from kdistill.experiment.run import run_distill


def test_a_streamed_image_folder_distils_and_evaluates_with_the_ema(tmp_path, caplog):
    pytest.importorskip("PIL.Image")
    write_colour_folder(tmp_path / "imgs", per_class=10)
    cfg = parse_config({
        "data": {"dataset": "image-folder", "options": {"path": str(tmp_path / "imgs")}, "loader": "stream",
                 "workers": 0},
        "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple", "options": {"hidden": [8]}},
        "train": {"epochs": 2, "batch_size": 8, "progress": False, "device": "cpu", "ema": 0.9,
                  "accumulate": 2}})
    with caplog.at_level("INFO", logger="kdistill.data"):
        result = run_distill(cfg, out_dir=tmp_path / "run")
    assert any(r.getMessage().startswith("data loader: stream") for r in caplog.records)
    assert result.metrics["n_test"] == 6 and "agreement" in result.metrics
    assert (tmp_path / "run" / "student" / "teacher-cache" / "logits.npy").is_file()
    model, meta = load_model(result.checkpoint)
    assert meta["model_spec"]["input_shape"] == [3, 12, 16]
    from kdistill.experiment.records import load_data

    again = evaluate_checkpoint(result.checkpoint, load_data(cfg))
    assert again["accuracy"] == result.metrics["accuracy"]  # the EMA weights are what was evaluated and kept


def test_features_that_need_the_set_in_memory_refuse_a_streamed_one_in_words(tmp_path):
    from kdistill.errors import ConfigError
    from kdistill.experiment.records import load_data
    from kdistill.schemes import run_experiment

    cfg = parse_config({"data": {"dataset": "digits", "loader": "stream"},
                        "teacher": {"model": "mlp-simple"}, "student": {"model": "mlp-simple"},
                        "distill": {"scheme": {"name": "born-again"}}})
    with pytest.raises(ConfigError, match="The compression study works on data sets held whole"):
        load_data(cfg, whole_for="The compression study")
    with pytest.raises(ConfigError, match="Scheme 'born-again' works on data sets held whole in memory"):
        run_experiment(cfg, out_dir=tmp_path)
