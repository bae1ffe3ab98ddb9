"""Configs as files, read without torch: a run's YAML, a sweep file and its grid expanded into RunSpecs,
the one run of a sweep that a command's flags pick, and the spec a command's `--config` describes.

`vlbench run`, the sweep planner and plugin commands (the tm plugin's `vlbench experts`, through
`vlbench.runner.run_from_config`) all read configs here, so that a file means the same to each.
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import yaml

from vlbench.core import RunSpec, VLBenchError, resolve_spec, with_eval_backbones
from vlbench.tuning.tuned import with_tuned

#: What a run's YAML may set: every RunSpec field, where its records go, and the backbones that evaluate it.
CONFIG_KEYS = sorted({f.name for f in dataclasses.fields(RunSpec)} | {"results", "eval_backbones"})
#: What a sweep file may set (the executor's own fields are checked by `vlbench.sweep.plan.Sweep`).
SWEEP_KEYS = ("name", "grid", "results", "executor", "workers", "retries", "submitit")


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """A YAML mapping (none: empty); a file that cannot be read or parsed is one line."""
    if path is None:
        return {}
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise VLBenchError(f"cannot read config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise VLBenchError(f"cannot read config {path}{where}: {getattr(e, 'problem', None) or e}") from e
    if not isinstance(config, dict):
        raise VLBenchError(f"config {path} must be a mapping of option: value, got {type(config).__name__}")
    return config


def load_config(path: str | Path | None) -> dict[str, Any]:
    """A run's YAML config: a mapping of RunSpec options (and `results`, `eval_backbones`)."""
    config = read_yaml(path)
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise VLBenchError(f"config {path}: unknown option(s) {', '.join(sorted(unknown))} (known: {', '.join(CONFIG_KEYS)})")
    return config


def read_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep file's fields, checked: known keys, a `grid` that is a list of mappings, a `name` (the file's)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise VLBenchError(f"cannot read sweep {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(config, dict) or "grid" not in config:
        raise VLBenchError(f"sweep {path} must be a mapping with a `grid` of run options")
    unknown = set(config) - set(SWEEP_KEYS)
    if unknown:
        raise VLBenchError(f"sweep {path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(SWEEP_KEYS)})")
    grid = config["grid"] if isinstance(config["grid"], list) else [config["grid"]]
    if not grid or not all(isinstance(g, dict) for g in grid):
        raise VLBenchError(f"sweep {path}: `grid` must be a mapping of run option: value or list, or a list of them")
    return {**config, "grid": grid, "name": config.get("name") or path.stem}


def expand(grid: list[dict[str, Any]]) -> list[RunSpec]:
    """Every combination of every grid: a list value is an axis, anything else is fixed; each is resolved
    as `vlbench run` resolves its config (so `budget` may be left out for `full`, which trains on every pair,
    and `tuned: true` reads the options the tuning ruleset chose for its condenser and budget)."""
    specs = []
    for g in grid:
        axes = {k: v if isinstance(v, list) else [v] for k, v in with_eval_backbones(g).items()}
        for values in itertools.product(*axes.values()):
            try:
                specs.append(resolve_spec(with_tuned(dict(zip(axes, values)))))
            except VLBenchError as e:
                raise VLBenchError(f"bad grid entry {dict(zip(axes, values))}: {e}") from e
    return specs


def one_run(path: str | Path, flags: dict[str, Any]) -> RunSpec:
    """The run of sweep `path` that `flags` (run options, None: not given) pick, for `vlbench run --config`:
    a flag on an option the grid varies selects, one on an option it fixes overrides it later."""
    specs = expand(read_sweep(path)["grid"])
    values = {k: distinct([getattr(s, k) for s in specs]) for k in flags}
    varying = {k: v for k, v in values.items() if len(v) > 1}
    picked = [s for s in specs if all(flags[k] is None or getattr(s, k) == flags[k] for k in varying)]
    choices = ", ".join(f"--{k.replace('_', '-')} " + " | ".join(map(str, values)) for k, values in varying.items())
    if not picked:
        given = ", ".join(f"{k} {flags[k]}" for k in varying if flags[k] is not None)
        raise VLBenchError(f"sweep {path} has no run with {given} (its runs: {choices})")
    if len(picked) > 1:
        raise VLBenchError(f"sweep {path} holds {len(picked)} runs: pick one with {choices or 'no flag (they differ in more)'}"
                           f", or run them all with `vlbench sweep {path}`")
    return picked[0]


def distinct(values: list[Any]) -> list[Any]:
    """The distinct values, in order (dicts too: a grid's tuned provenance is one)."""
    return [v for i, v in enumerate(values) if v not in values[:i]]


def run_config(path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The options of a run YAML, or of the one run of a sweep YAML (a preset) that `flags` pick (`one_run`)."""
    config = read_yaml(path)
    if "grid" not in config:
        return load_config(path)
    return {**one_run(path, flags).to_dict(), **({"results": config["results"]} if "results" in config else {})}


def spec_from_config(path: str | Path | None, defaults: dict[str, Any], flags: dict[str, Any],
                     condenser_options: dict[str, Any] | None = None) -> RunSpec:
    """The run a command's `--config` file describes (a run YAML, or a sweep YAML: its first run), resolved as
    `vlbench run` resolves one: `defaults` < the file < `flags` (None: not given), with `condenser_options`
    over the file's. Only the condensing side: the file's evaluation backbones and results are left out."""
    config = expand(read_sweep(path)["grid"])[0].to_dict() if "grid" in read_yaml(path) else load_config(path)
    for key in ("results", "eval_backbone", "eval_backbones", "eval_backbone_options"):
        config.pop(key, None)
    if condenser_options:
        config["condenser_options"] = {**config.get("condenser_options", {}), **condenser_options}
    given = {k: v for k, v in flags.items() if v is not None}
    return resolve_spec(with_tuned({**defaults, **config, **given}))
