"""Tuned configs: the options the tuning ruleset chose for a condenser at one (data set, backbone, budget),
kept as a small, readable YAML file under configs/tuned/ and read by runs and sweeps given `tuned: true`.

vlbench/tuning/studies.py writes them (`vlbench tune`); this module only names and reads them, so that resolving
a run needs neither Optuna nor the sweep machinery.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlbench.core import RunSpec, VLBenchError, option_defaults, option_text, stable_hash
from vlbench.spaces import Space, search_space

TUNED_DIR = Path("configs") / "tuned"


@dataclass(frozen=True)
class Target:
    """What one study tunes: a condenser at a budget on a data set and backbone (with their options)."""

    condenser: str
    budget: int
    dataset: str = "synthscenes"
    backbone: str = "tinyvit-minilm"
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The evaluation protocol's fields that differ from the default (the same for every method).
    protocol: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def _options(self) -> str:
        given = [self.dataset_options, self.backbone_options, self.protocol]
        return f"-{stable_hash(given, 6)}" if any(given) else ""

    @property
    def name(self) -> str:
        """The study's name: `tm-lora-synthscenes-tinyvit-minilm-100`."""
        return f"{self.condenser}-{self.dataset}-{self.backbone}{self._options}-{self.budget}"

    @property
    def command(self) -> str:
        """The `vlbench tune` line that runs this study (values as YAML, which the flags read back); a target with
        data set options or a protocol of its own is tuned from Python (`vlbench.tuning.studies.tune`)."""
        flags = "".join(f" --backbone-opt {k}={option_text(v)}" for k, v in sorted(self.backbone_options.items()))
        command = (f"vlbench tune --condenser {self.condenser} --budget {self.budget} --dataset {self.dataset} "
                   f"--backbone {self.backbone}{flags}")
        if self.dataset_options or self.protocol:  # no flags for them
            return f"vlbench.tuning.studies.tune(Target(...)) with this target's data set options and protocol"
        return command

    @property
    def tuned_file(self) -> Path:
        """Where the choice goes: `configs/tuned/synthscenes/tinyvit-minilm/tm-lora-100.yaml`."""
        return TUNED_DIR / self.dataset / self.backbone / f"{self.condenser}{self._options}-{self.budget}.yaml"


def declared_space(condenser: str) -> tuple[dict[str, Space], dict[str, Any]]:
    """({option: space}, {option: default}) of a registered condenser."""
    from vlbench.plugins import registry

    config = registry().get("condenser", condenser).Config
    return search_space(config), option_defaults(config)


def canonical(params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The options a run is given for `params`: those at their default are left out, so that the trial of
    the declared defaults is the default run (one run key, one record)."""
    return {k: v for k, v in sorted(params.items()) if v != defaults[k]}


def with_tuned(config: dict[str, Any]) -> dict[str, Any]:
    """A run config whose `tuned` is true (or a tuned file's path) with that file's options in place:
    `condenser_options` given beside it win (an ablation of a tuned row). A condenser that declares no
    search space has nothing to read: its run is the default run. The config's `tuned` becomes the
    provenance the record keeps (study, ruleset, trial count)."""
    tuned = config.get("tuned")
    if tuned is None or isinstance(tuned, dict):
        return config
    config = dict(config)
    del config["tuned"]
    if tuned is False:
        return config
    if "condenser" not in config or "budget" not in config:
        raise VLBenchError("`tuned` needs a condenser and a budget: it reads the config tuned for them")
    fields = {f.name: f.default for f in dataclasses.fields(RunSpec) if f.default is not dataclasses.MISSING}
    target = Target(config["condenser"], config["budget"], config.get("dataset", fields["dataset"]),
                    config.get("backbone", fields["backbone"]), config.get("dataset_options") or {},
                    config.get("backbone_options") or {}, config.get("protocol") or {})
    path = Path(tuned) if isinstance(tuned, str) else target.tuned_file
    # a tuned file is read without loading its condenser (reading sweep files stays torch-free); only a
    # missing one asks whether the condenser has anything to tune
    if tuned is True and not path.is_file() and not declared_space(target.condenser)[0]:
        return config
    if not path.is_file():
        raise VLBenchError(f"no tuned config for {target.condenser} at {target.budget} pairs on {target.dataset} "
                           f"({path} does not exist): run `{target.command}` first")
    choice = read_choice(path)
    for field in dataclasses.fields(Target):  # a file passed by path may be another target's
        wanted = getattr(target, field.name)
        found = choice.get(field.name, {} if isinstance(wanted, dict) else None)  # empty options are left out
        if found != wanted:
            raise VLBenchError(f"tuned config {path} is for {field.name} {found!r}, not {wanted!r}")
    config["condenser_options"] = {**choice["condenser_options"], **(config.get("condenser_options") or {})}
    t = choice["tuning"]
    config["tuned"] = {"study": t["study"], "ruleset": t["ruleset"], "trials": t["trials"],
                       "ruleset_trials": t["ruleset_trials"], "options": choice["condenser_options"]}
    return config


def read_choice(path: Path) -> dict[str, Any]:
    try:
        choice = yaml.safe_load(path.read_text())
        choice["condenser_options"], choice["tuning"]["trials"]  # noqa: B018 (the fields a run reads)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise VLBenchError(f"tuned config {path} cannot be read ({type(e).__name__}: {e}); regenerate it with "
                           "`vlbench tune`") from e
    return choice


def write_choice(target: Target, options: dict[str, Any], tuning: dict[str, Any], path: Path | None = None) -> Path:
    """The chosen `options` (canonical: defaults left out) with how they were chosen, as a YAML file to commit."""
    from vlbench.storage import atomic_write_text

    path = path or target.tuned_file
    choice = {"condenser": target.condenser, "dataset": target.dataset, "backbone": target.backbone,
              "budget": target.budget,
              **({"dataset_options": target.dataset_options} if target.dataset_options else {}),
              **({"backbone_options": target.backbone_options} if target.backbone_options else {}),
              **({"protocol": target.protocol} if target.protocol else {}),
              "condenser_options": options, "tuning": tuning}
    header = (f"# Chosen by the tuning ruleset v{tuning['ruleset']} (docs/protocol.md): the best of {tuning['trials']} "
              f"trials on {tuning['split']}. Used by runs and sweeps given `tuned: true`.\n"
              f"# Regenerate: {target.command}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, header + yaml.safe_dump(choice, sort_keys=False))
    return path
