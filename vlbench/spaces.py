"""Search spaces a plugin declares on its options, for the tuning ruleset (`vlbench tune`, docs/protocol.md).

    lr_img: float = option(1.0, "pixel lr", search=LogUniform(0.1, 100))

A space says which values a tuner may try for one option; nothing else about tuning (the number of
trials, the sampler, the split) is the method's to choose. This module imports neither torch nor
Optuna: `vlbench list --options NAME` prints spaces without either, and vlbench/tuning/studies.py maps them
onto an Optuna trial.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vlbench.core import VLBenchError


class Space:
    """The values one option may take in tuning."""

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """A value drawn by an Optuna trial."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Range(Space):
    low: float
    high: float

    def __post_init__(self):
        if not self.low < self.high:
            raise VLBenchError(f"{self}: low must be below high")


@dataclass(frozen=True)
class LogUniform(_Range):
    """A positive float, uniform in its logarithm (learning rates)."""

    def __post_init__(self):
        super().__post_init__()
        if self.low <= 0:
            raise VLBenchError(f"{self}: a log scale needs low > 0")

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)

    def __str__(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform(_Range):
    """A float, uniform between its bounds."""

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)

    def __str__(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntRange(_Range):
    """An integer between its bounds (inclusive), uniform or, with `log`, uniform in its logarithm."""

    low: int
    high: int
    log: bool = False

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def __str__(self) -> str:
        return f"int{' log' if self.log else ''} [{self.low}, {self.high}]"


class Choice(Space):
    """One of a few values (categories, or a coarse grid where each value costs very differently)."""

    def __init__(self, *values: Any):
        if len(values) < 2 or len(set(map(repr, values))) != len(values):
            raise VLBenchError(f"Choice needs at least two distinct values, got {values!r}")
        self.values = values

    def contains(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and self.values == other.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        return f"Choice{self.values!r}"

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.values))


def search_space(config: type) -> dict[str, Space]:
    """{option: space} of the options a `Config` dataclass declares as tuned, in field order."""
    return {f.name: f.metadata["search"] for f in dataclasses.fields(config) if f.metadata.get("search")}


def check_space(config: type, owner: str) -> None:
    """Every declared default lies in its space (the default is the study's first trial)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, space in search_space(config).items():
        if not space.contains(defaults[name]):
            raise VLBenchError(f"{owner} option {name!r}: its default {defaults[name]!r} is outside its search space "
                               f"({space})")

