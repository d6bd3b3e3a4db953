from typing import Any, cast

import pytest
from pydantic import TypeAdapter, ValidationError

from launchers.slurm.ids import expand_array_id, master_id
from launchers.space import GridSpace, ListSpace, ParameterSpace, RandomSpace, parse_array
from launchers.sweeps import as_env, chunks

SPACE = TypeAdapter(ParameterSpace)


def test_grid_is_a_cartesian_product_last_name_fastest() -> None:
    grid = GridSpace(grid={"LR": [0.1, 0.01], "BATCH_SIZE": [32, 64, 128]})
    points = grid.points()
    assert len(points) == 6
    assert points[0] == {"LR": 0.1, "BATCH_SIZE": 32} and points[1] == {"LR": 0.1, "BATCH_SIZE": 64}
    assert points[3] == {"LR": 0.01, "BATCH_SIZE": 32}
    assert grid.points() == points  # task i always gets the same parameters


def test_list_and_random_spaces() -> None:
    listed = SPACE.validate_python({"kind": "list", "points": [{"LR": 1}, {"LR": 2, "FC_SIZE": 8}]})
    assert listed.points() == [{"LR": 1}, {"LR": 2, "FC_SIZE": 8}]
    spec = {
        "kind": "random",
        "n": 5,
        "seed": 3,
        "choices": {"FC_SIZE": [16, 32]},
        "ranges": {"LR": {"low": 0.001, "high": 0.1, "log": True}, "EPOCHS": {"low": 1, "high": 9, "integer": True}},
    }
    first, again = SPACE.validate_python(spec).points(), SPACE.validate_python(spec).points()
    assert first == again and len(first) == 5
    assert all(
        0.001 <= cast(float, p["LR"]) <= 0.1 and p["FC_SIZE"] in (16, 32) and isinstance(p["EPOCHS"], int)
        for p in first
    )
    assert SPACE.validate_python({**spec, "seed": 4}).points() != first


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"kind": "grid", "grid": {}}, "empty"),
        ({"kind": "grid", "grid": {"LR": []}}, "no values"),
        ({"kind": "grid", "grid": {"lr": [1]}}, "invalid parameter name"),
        ({"kind": "grid", "grid": {f"P{i}": list(range(10)) for i in range(6)}}, "more than 100000"),
        ({"kind": "list", "points": []}, "empty"),
        ({"kind": "random", "n": 200_000, "choices": {"A": [1]}}, "more than 100000"),
        ({"kind": "random", "n": 3}, "needs at least one"),
        ({"kind": "random", "n": 3, "ranges": {"A": {"low": 2, "high": 1}}}, "below low"),
    ],
)
def test_bad_spaces(space: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPACE.validate_python(space)


def test_sbatch_array_syntax() -> None:
    assert parse_array("0-99%10") == (list(range(100)), 10)
    assert parse_array("1,3,5-7") == ([1, 3, 5, 6, 7], None)
    assert parse_array("0-10:5") == ([0, 5, 10], None)
    for bad in ("a-b", "5-1", "1-3%x"):
        with pytest.raises(ValueError, match="invalid"):
            parse_array(bad)


def test_array_ids() -> None:
    assert expand_array_id("123_[4-6%3]") == ["123_4", "123_5", "123_6"]
    assert expand_array_id("123_[1,3-4]") == ["123_1", "123_3", "123_4"]
    assert expand_array_id("123_7") == ["123_7"] and expand_array_id("99") == ["99"]
    assert master_id("123_7") == "123" and master_id("99") == "99"


def test_chunks_and_env() -> None:
    assert [list(c) for c in chunks(11, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10]]
    assert as_env({"LR": 0.1, "USE_AMP": True, "N": 3}) == {"LR": "0.1", "USE_AMP": "true", "N": "3"}
    assert ListSpace(points=[{"A": 1}]).points() == [{"A": 1}]
    assert RandomSpace(n=1, choices={"A": [1]}).points() == [{"A": 1}]
