"""The torch-free core: errors, hashing, the cache root, the training protocol and the run spec.

Everything here imports only the standard library, so that `vlbench --help`, `list`, `plugins` and
`leaderboard` answer without loading torch (tests/test_plugins.py), and so does reading a config or a sweep
file (vlbench/config.py). `vlbench sweep --dry-run` does load torch: planning resolves each run against
its condenser, backbone and shared-stage classes to compute its run, condense and stage keys, and those
classes live in torch modules; it loads none of the model libraries (peft, timm, transformers, open_clip:
tests/test_light_imports.py). `vlbench.api` re-exports all of it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SIDES = ("image", "text")
SPLITS = ("test", "val")
PRECISIONS = ("fp32", "bf16")


class VLBenchError(Exception):
    """An error caused by user input; the CLI prints its message as one line."""


class PluginError(VLBenchError):
    """A plugin could not be loaded, registered something invalid, failed, or broke the contract; one line names
    it, `--traceback` shows the cause."""


def check_budget(budget: int, num_pairs: int, of: str = "training pairs") -> None:
    """The one budget check: 1 <= budget <= num_pairs, else one line naming both."""
    if not 0 < budget <= num_pairs:
        raise VLBenchError(f"budget must be between 1 and the {num_pairs} {of}, got {budget}")


def cache_dir() -> Path:
    """Root of everything vlbench derives (data, embeddings, weights, condensed sets)."""
    return Path(os.environ.get("VLBENCH_CACHE", Path.home() / ".cache" / "vlbench")).expanduser()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Content hash of a JSON-able object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def derived_seed(*parts: Any) -> int:
    """A seed from a tuple such as ("init", seed, iteration) (no clock): every random draw a method makes
    per iteration or epoch is replayable, and draws named differently are independent."""
    return int(stable_hash(list(parts), 12), 16) % 2**62


def _check_types(obj: Any, what: str) -> None:
    """One line per field whose value does not have its annotated type (a YAML `budget: "abc"` must not
    become a traceback later); an int given for a float field becomes that float."""
    hints = typing.get_type_hints(type(obj))
    for name in (f.name for f in dataclasses.fields(obj)):
        value, hint = getattr(obj, name), hints[name]
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, name, float(value))  # YAML writes 1e-2 as a string but 1 as an int
        elif not _fits(value, hint):
            raise VLBenchError(f"{what} option {name!r} must be {_type_name(hint)}, got {value!r}")


def option(default: Any, help: str, search: Any = None) -> Any:
    """A plugin option: a `Config` dataclass field with its default and one line of help, which
    `vlbench list --options NAME` prints; `search` (a `vlbench.spaces.Space`) declares the values the
    tuning ruleset may try for it (none: never tuned)."""
    metadata = {"help": help, **({"search": search} if search is not None else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def option_defaults(config: type) -> dict[str, Any]:
    """{option: default} of a `Config` dataclass."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(config)}


def option_text(value: Any) -> str:
    """An option's value as YAML flow text (`null`, `1.0e-05`, `emoji`): how listings show it and how a
    `key=value` flag spells it (flags are read back as YAML)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def without_added_later(values: dict[str, Any], added_later: dict[str, Any]) -> dict[str, Any]:
    """`values` less the options added after records were made that hold the value those records had,
    so that their keys and ids stay what they were."""
    return {k: v for k, v in values.items() if k not in added_later or v != added_later[k]}


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` has the annotated type (an int is a float; a bool is neither; list[str] checks list)."""
    if hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    if typing.get_origin(hint) is typing.Literal:
        return value in typing.get_args(hint)
    hint = typing.get_origin(hint) or hint
    if hint in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if hint is float else hint)


def make_config(kind: str, name: str, config: type, given: dict[str, Any]) -> Any:
    """A plugin's `Config` from the options a user gave: an unknown or mistyped option is one line,
    before the dataclass checks combinations in its `__post_init__`."""
    hints = typing.get_type_hints(config)
    known = [f.name for f in dataclasses.fields(config)]
    unknown = set(given) - set(known)
    if unknown:
        raise VLBenchError(f"{kind} {name!r} has no option(s) {', '.join(sorted(unknown))} "
                           f"(options: {', '.join(sorted(known)) or 'none'})")
    for key, value in given.items():
        if not _fits(value, hints[key]):
            raise VLBenchError(f"{kind} {name!r} option {key!r} must be {_type_name(hints[key])}, got {value!r}")
    return config(**given)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) and not typing.get_args(hint) else str(hint).replace("typing.", "")


class Configured:
    """A plugin class whose options are a `Config` dataclass (condensers, backbones, data sets): `self.config`
    holds every option's value (`self.config.lr`), checked when the plugin is made (`make_config`: one line for
    an unknown option or a wrong type); `defaults` is read from `Config`."""

    kind: typing.ClassVar[str]
    name: typing.ClassVar[str]
    #: Its fields (`option`: default and help) are every option the plugin takes; its `__post_init__` may
    #: refuse bad combinations, before any work.
    Config: typing.ClassVar[type] = dataclasses.make_dataclass("Config", [])
    #: {option: default}, read from `Config`.
    defaults: typing.ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.defaults = option_defaults(cls.Config)

    def __init__(self, **options: Any):
        self.config = make_config(self.kind, self.name, self.Config, options)


@dataclass(frozen=True)
class TrainProtocol:
    """How a fresh model is trained: the same code trains experts and evaluation models."""

    steps: int = 300
    batch_size: int = 128
    lr: float = 0.03  # chosen on val: configs/tuning/protocol-lr.yaml, docs/protocol.md
    momentum: float = 0.9
    weight_decay: float = 5e-4
    #: When a condensed set carries learned learning rates, train with them (and this momentum).
    learned_lr_momentum: float = 0.0
    #: Random-resized crop + flip on flip-safe photo data sets (the official code: none on condensed sets).
    augment: bool = True
    #: "per_side": each side trains at its own learned lr; "image": both at the image lr (the official code).
    learned_lr_sides: str = "per_side"
    #: "fp32" on every device (one protocol is one computation); "bf16": forward passes under bfloat16
    #: autocast, for speed (expert training and evaluation alike).
    precision: str = "fp32"
    version: str = "2"

    #: Fields added after records were made, with the value those records had (`without_added_later`).
    added_later: typing.ClassVar[dict[str, Any]] = {"precision": "fp32"}

    def __post_init__(self):
        _check_types(self, "protocol")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise VLBenchError("protocol steps and batch_size must be >= 1 and lr > 0")
        if self.learned_lr_sides not in ("per_side", "image"):
            raise VLBenchError(f"protocol learned_lr_sides must be 'per_side' or 'image', got {self.learned_lr_sides!r}")
        if self.precision not in PRECISIONS:
            raise VLBenchError(f"protocol precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        """The protocol as ids, run keys and records hold it."""
        return without_added_later(dataclasses.asdict(self), self.added_later)

    @property
    def id(self) -> str:
        return f"v{self.version}-{stable_hash(self.to_dict(), 6)}"


#: The lr for training on all training pairs, chosen on val for `full` (scripts/tune_full_epochs.py,
#: docs/protocol.md): the protocol's 0.03 is chosen for small sets and diverges on all pairs for some seeds.
#: `full`, forgetting's history and the coresets' reference model train at it.
FULL_DATA_LR = 0.01


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run: condense once, train `evals` fresh models, evaluate on `split` (immutable)."""

    condenser: str
    budget: int
    dataset: str = "synthscenes"
    backbone: str = "tinyvit-minilm"
    data_root: str | None = None
    evals: int = 5
    seed: int = 0
    split: str = "test"
    condenser_options: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    protocol: TrainProtocol = field(default_factory=TrainProtocol)
    device: str = "auto"
    #: The backbone whose fresh models are trained on the set and evaluated (None: `backbone`, which
    #: condensed it), built with `eval_backbone_options` (empty: its defaults; for the condensing
    #: backbone's own name, `backbone_options`). It must share the condensing backbone's text encoder.
    #: The set is condensed once, whatever evaluates it.
    eval_backbone: str | None = None
    eval_backbone_options: dict[str, Any] = field(default_factory=dict)
    #: Where `condenser_options` came from when they are a tuned config (vlbench/tuning/studies.py): the study,
    #: the ruleset and its trial count, which the record keeps and the leaderboard shows. None: not tuned.
    tuned: dict[str, Any] | None = None

    def __post_init__(self):
        _check_types(self, "run")
        if self.eval_backbone == self.backbone and self.eval_backbone_options in ({}, self.backbone_options):
            object.__setattr__(self, "eval_backbone", None)  # evaluated on what condensed it: the plain run
        if self.eval_backbone is None:  # one config serves runs with and without --eval-backbone
            object.__setattr__(self, "eval_backbone_options", {})
        if self.evals < 1:
            raise VLBenchError(f"evals must be at least 1 (the number of evaluation models), got {self.evals}")
        if self.seed < 0:
            raise VLBenchError(f"seed must be >= 0, got {self.seed}")
        if self.split not in SPLITS:
            raise VLBenchError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as records and run keys hold it: the evaluation backbone and the tuning provenance only
        when given, so that the keys of runs recorded before they existed stay what they were."""
        d = {**dataclasses.asdict(self), "protocol": self.protocol.to_dict()}
        for name in ("eval_backbone", "eval_backbone_options", "tuned"):
            if not d[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise VLBenchError(f"unknown run option(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        if isinstance(d.get("protocol"), dict):
            d["protocol"] = TrainProtocol(**d["protocol"])  # TypeError: an unknown protocol option
        elif d.get("protocol") is None:
            d.pop("protocol", None)
        return cls(**d)


def with_eval_backbones(config: dict[str, Any]) -> dict[str, Any]:
    """`eval_backbones: [a, b]` (YAML, sweep grids) is the list form of `eval_backbone`: one run per name,
    each with its own record, of one condensed set."""
    config = dict(config)
    if "eval_backbones" in config:
        if "eval_backbone" in config:
            raise VLBenchError("give eval_backbone or eval_backbones, not both")
        names = config.pop("eval_backbones")
        config["eval_backbone"] = names if isinstance(names, list) else [names]
    return config


def resolve_spec(config: dict[str, Any], flags: dict[str, Any] | None = None) -> RunSpec:
    """The one way a run is resolved (run, experts, show, sweeps): defaults < YAML `config` < `flags`
    (None = not given). `budget` defaults to 0, which only `full` accepts: it trains on every pair."""
    merged = {**config, **{k: v for k, v in (flags or {}).items() if v is not None}}
    if "condenser" not in merged:
        raise VLBenchError("no condenser given: pass --condenser NAME (see `vlbench list`)")
    try:
        return RunSpec.from_dict({"budget": 0, **merged})
    except TypeError as e:
        raise VLBenchError(f"bad run option: {e}") from e
