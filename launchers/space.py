"""Sweep parameter spaces: a grid, an explicit list, or random sampling, each expanded in a fixed order.

Task ``i`` always gets the same parameters: the grid is a cartesian product in the order the names were given
(the last name varies fastest, as in nested loops), and random sampling draws from a seeded generator.
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_POINTS = 100_000
NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
Scalar = str | int | float | bool


def _check_names(names: list[str]) -> None:
    for name in names:
        if not NAME_RE.match(name):
            raise ValueError(f"invalid parameter name {name!r}: use [A-Z][A-Z0-9_]*")


class GridSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["grid"] = "grid"
    grid: dict[str, list[Scalar]]

    @model_validator(mode="after")
    def _valid(self) -> GridSpace:
        if not self.grid:
            raise ValueError("the grid is empty")
        _check_names(list(self.grid))
        size = 1
        for name, values in self.grid.items():
            if not values:
                raise ValueError(f"grid dimension {name!r} has no values")
            size *= len(values)
        if size > MAX_POINTS:
            raise ValueError(f"the grid has {size} points, more than {MAX_POINTS}")
        return self

    def points(self) -> list[dict[str, Scalar]]:
        names = list(self.grid)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.grid.values())]


class ListSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["list"] = "list"
    points_: list[dict[str, Scalar]] = Field(alias="points")

    @model_validator(mode="after")
    def _valid(self) -> ListSpace:
        if not self.points_:
            raise ValueError("the parameter list is empty")
        if len(self.points_) > MAX_POINTS:
            raise ValueError(f"the parameter list has {len(self.points_)} points, more than {MAX_POINTS}")
        for point in self.points_:
            _check_names(list(point))
        return self

    def points(self) -> list[dict[str, Scalar]]:
        return [dict(p) for p in self.points_]


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _valid(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"range high {self.high} is below low {self.low}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class RandomSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["random"] = "random"
    n: int = Field(ge=1)
    seed: int = 0
    choices: dict[str, list[Scalar]] = {}
    ranges: dict[str, Range] = {}

    @model_validator(mode="after")
    def _valid(self) -> RandomSpace:
        if not self.choices and not self.ranges:
            raise ValueError("random sampling needs at least one of choices or ranges")
        if self.n > MAX_POINTS:
            raise ValueError(f"{self.n} samples, more than {MAX_POINTS}")
        _check_names([*self.choices, *self.ranges])
        for name, values in self.choices.items():
            if not values:
                raise ValueError(f"choices for {name!r} are empty")
        return self

    def points(self) -> list[dict[str, Scalar]]:
        rng = random.Random(self.seed)  # noqa: S311  (reproducible sampling, not cryptography)
        points = []
        for _ in range(self.n):
            point: dict[str, Scalar] = {name: rng.choice(values) for name, values in sorted(self.choices.items())}
            for name, r in sorted(self.ranges.items()):
                value = _sample(rng, r)
                point[name] = round(value) if r.integer else value
            points.append(point)
        return points


def _sample(rng: random.Random, r: Range) -> float:
    if r.log:
        import math

        return math.exp(rng.uniform(math.log(r.low), math.log(r.high)))
    return rng.uniform(r.low, r.high)


ParameterSpace = Annotated[GridSpace | ListSpace | RandomSpace, Field(discriminator="kind")]


def parse_array(expr: str) -> tuple[list[int], int | None]:
    """``'0-99%10'`` / ``'1,3,5-7'`` (sbatch --array syntax) -> (indices, throttle or None)."""
    body, _, throttle = expr.partition("%")
    indices: list[int] = []
    for part in body.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if m is None:
            raise ValueError(f"invalid array index expression {expr!r}")
        low = int(m.group(1))
        high = int(m.group(2) or low)
        step = int(m.group(3) or 1)
        if high < low or step < 1:
            raise ValueError(f"invalid range {part!r} in {expr!r}")
        indices.extend(range(low, high + 1, step))
    if throttle and not throttle.isdigit():
        raise ValueError(f"invalid throttle {throttle!r} in {expr!r}")
    return sorted(set(indices)), int(throttle) if throttle else None
