"""`KEY=VALUE` option flags (`-o`, `--backbone-opt`), shared by `vlbench run` and `vlbench tune`."""
from __future__ import annotations

import types
import typing
from typing import Any

import yaml

from vlbench.core import RunSpec, VLBenchError, option_defaults
from vlbench.plugins import registry


def parse_assignments(items: list[str], config: type, what: str) -> dict[str, Any]:
    """`key=value` flags of a plugin's `Config` dataclass, each value read as YAML and typed by the option's
    default (`null` where its annotation allows None, e.g. `pretrained: str | None`)."""
    defaults = option_defaults(config)
    hints = typing.get_type_hints(config)
    nullable = {name for name, hint in hints.items()
                if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)}
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise VLBenchError(f"{what} option {item!r} must look like key=value")
        if key not in defaults:
            raise VLBenchError(f"{what} has no option {key!r} (options: {', '.join(sorted(defaults)) or 'none'})")
        value, default = yaml.safe_load(text), defaults[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and not isinstance(value, type(default)) and not (value is None and key in nullable):
            raise VLBenchError(f"{what} option {key}={text!r}: expected {type(default).__name__} like its default {default!r}")
        out[key] = value
    return out


def backbone_assignments(backbone: str, items: list[str]) -> dict[str, Any]:
    """`--backbone-opt` flags of `backbone`, typed by its defaults; those at their default are left out, so that
    spelling a default out names the default backbone (its run keys, studies and tuned files)."""
    if not items:
        return {}
    config = registry().get("backbone", backbone).Config
    defaults = option_defaults(config)
    return {k: v for k, v in parse_assignments(items, config, f"backbone {backbone!r}").items() if v != defaults[k]}


def with_assignments(config: dict[str, Any], options: list[str], backbone_options: list[str]) -> dict[str, Any]:
    """A run config with `-o` and `--backbone-opt` flags merged over its options (flags win). Applied before its
    tuned config is read, which is chosen per backbone options and which `-o` overrides."""
    if not options and not backbone_options:
        return config
    condenser = config.get("condenser")
    if options and condenser is None:
        raise VLBenchError("-o options need a condenser (--condenser NAME)")
    if backbone_options and isinstance(config.get("tuned"), dict):  # a sweep file's run, its tuned config read
        raise VLBenchError("--backbone-opt cannot change the backbone of a tuned run picked from a sweep file (its "
                           "tuned config is that backbone's): set backbone_options in the sweep file's grid instead")
    backbone = config.get("backbone", RunSpec.backbone)
    condenser_options = parse_assignments(options, registry().get("condenser", condenser).Config,
                                          f"condenser {condenser!r}") if options else {}
    return {**config, "condenser_options": {**(config.get("condenser_options") or {}), **condenser_options},
            "backbone_options": {**(config.get("backbone_options") or {}), **backbone_assignments(backbone, backbone_options)}}
