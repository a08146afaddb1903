"""Table options: columns chosen and dropped by name, categorical encodings, missing values, float64."""

import numpy as np
import pytest
import torch

from kdistill.data import DataSplits, load_dataset
from kdistill.errors import ConfigError, DataError


def write(path, text):
    path.write_text(text)
    return str(path)


def people(tmp_path, rows=None):
    rows = rows or [f"{i},{20 + i},{['red', 'green', 'blue'][i % 3]},{1.5 * i},{i % 2}" for i in range(12)]
    return write(tmp_path / "people.csv", "id,age,colour,score,label\n" + "\n".join(rows) + "\n")


def test_an_id_column_can_be_dropped_and_columns_selected_by_name(tmp_path):
    path = people(tmp_path)
    with pytest.raises(DataError, match="column 3 \\('colour'\\), data row 1: the value is not a number.*categorical"):
        load_dataset("csv", path=path)  # a text column is not silently encoded
    data = load_dataset("csv", path=path, drop=["id", "colour"], normalize=False, test_fraction=0.25)
    assert data.input_shape == (2,)
    assert sorted(data.x_train[:, 0].tolist() + data.x_test[:, 0].tolist()) == [20.0 + i for i in range(12)]
    chosen = load_dataset("csv", path=path, columns=["score", "age"], normalize=False, test_fraction=0.25)
    assert chosen.input_shape == (2,)
    assert torch.all(chosen.x_train[:, 0] == (chosen.x_train[:, 1] - 20) * 1.5)  # score first, as listed
    with pytest.raises(DataError, match="no feature column 'height'.*option columns"):
        load_dataset("csv", path=path, columns=["height"])
    with pytest.raises(DataError, match="no dropped column 'nope'"):
        load_dataset("csv", path=path, drop=["nope"])
    with pytest.raises(ConfigError, match="columns must be a list of column names"):
        load_dataset("csv", path=path, columns="age")


def test_categoricals_one_hot_or_ordinal(tmp_path):
    path = people(tmp_path)
    onehot = load_dataset("csv", path=path, drop=["id"], categorical=["colour"], normalize=False,
                          test_fraction=0.25)
    assert onehot.input_shape == (5,)  # age, blue, green, red, score
    block = torch.cat([onehot.x_train, onehot.x_test])[:, 1:4]
    assert torch.all(block.sum(1) == 1) and set(block.flatten().tolist()) == {0.0, 1.0}
    ordinal = load_dataset("csv", path=path, drop=["id"], categorical={"colour": "ordinal"}, normalize=False,
                           test_fraction=0.25)
    assert ordinal.input_shape == (3,)
    assert set(torch.cat([ordinal.x_train, ordinal.x_test])[:, 1].tolist()) == {0.0, 1.0, 2.0}
    with pytest.raises(ConfigError, match="categorical must be"):
        load_dataset("csv", path=path, categorical={"colour": "hash"})


def test_a_test_table_uses_the_training_tables_categories(tmp_path):
    train = people(tmp_path)
    test = write(tmp_path / "test.csv", "id,age,colour,score,label\n1,30,purple,2.0,0\n2,31,red,2.0,1\n")
    data = load_dataset("csv", path=train, test_path=test, drop=["id"], categorical=["colour"], normalize=False)
    assert data.x_test[:, 1:4].tolist() == [[0, 0, 0], [0, 0, 1]]  # an unseen colour is all zeros
    with pytest.raises(DataError, match="test.csv, column 3 \\('colour'\\), data row 1: a category the training table"):
        load_dataset("csv", path=train, test_path=test, drop=["id"], categorical={"colour": "ordinal"})


def test_missing_values_are_an_error_by_default_or_dropped_or_filled(tmp_path):
    rows = [f"{i},{'' if i == 4 else 20 + i},{'NA' if i == 7 else 'red'},{1.5 * i},{i % 2}" for i in range(12)]
    path = people(tmp_path, rows)
    with pytest.raises(DataError, match="column 2 \\('age'\\), data row 5: the value is empty.*option missing"):
        load_dataset("csv", path=path, drop=["id"], categorical=["colour"])
    dropped = load_dataset("csv", path=path, drop=["id"], categorical=["colour"], missing="drop", normalize=False,
                           test_fraction=0.25)
    assert dropped.num_train + dropped.num_test == 10
    filled = load_dataset("csv", path=path, drop=["id", "colour"], missing="mean", normalize=False,
                          test_fraction=0.25)
    ages = torch.cat([filled.x_train, filled.x_test])[:, 0]
    assert not torch.isnan(ages).any() and filled.num_train + filled.num_test == 12
    zero = load_dataset("csv", path=path, drop=["id", "colour"], missing="zero", normalize=False)
    assert 0.0 in torch.cat([zero.x_train, zero.x_test])[:, 0].tolist()
    with pytest.raises(ConfigError, match="missing must be one of"):
        load_dataset("csv", path=path, missing="guess")


def test_float64_inputs_are_accepted():
    x = np.random.default_rng(0).normal(size=(10, 3))  # NumPy's float64
    data = DataSplits("f64", torch.from_numpy(x), torch.arange(10) % 2, torch.from_numpy(x[:4]),
                      torch.arange(4) % 2, 2, (3,))
    assert data.x_train.dtype == torch.float32 and data.x_test.dtype == torch.float32
    regression = DataSplits("r", torch.from_numpy(x), torch.from_numpy(x[:, 0]), torch.from_numpy(x),
                            torch.from_numpy(x[:, 0]), 0, (3,))
    assert regression.y_train.dtype == torch.float32


def test_a_column_listed_twice_is_refused(tmp_path):
    path = people(tmp_path)
    for key in ("columns", "drop", "categorical"):
        with pytest.raises(ConfigError, match=f"option {key} names 'age' more than once"):
            load_dataset("csv", path=path, **{key: ["age", "age"]})
