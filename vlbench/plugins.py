"""The plugin manager: every condenser, backbone and data set comes in through entry points.

First-party plugins (``plugins/`` in this repository) are declared in vlbench's own
pyproject under ``[project.entry-points.vlbench]``, exactly like a third party's, so there is
one door for all. A plugin that fails to import or whose hook raises is reported and skipped,
unless strict mode (``--strict-plugins`` or ``VLBENCH_STRICT_PLUGINS=1``) is on.

``VLBENCH_PLUGINS=a,b`` loads only those distributions; ``VLBENCH_DISABLE_PLUGINS=c`` blocks them.
"""
from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from vlbench import hookspecs
from vlbench.api import Backbone, Condenser, DatasetSource, VLBenchError

GROUP = "vlbench"
KINDS = {"condenser": Condenser, "backbone": Backbone, "dataset": DatasetSource}
HOOKS = {"condenser": "register_condensers", "backbone": "register_backbones", "dataset": "register_datasets"}


class PluginError(VLBenchError):
    """A plugin could not be loaded or registered something invalid."""


@dataclass
class PluginInfo:
    """One entry point: where it comes from, what it registered, what went wrong."""

    name: str
    distribution: str
    version: str
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name, "").strip()
    return {v.strip().lower() for v in value.split(",") if v.strip()} if value else None


def _strict_from_env() -> bool:
    return os.environ.get("VLBENCH_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


class Registry:
    """Loads the plugins once and answers name lookups for each kind."""

    def __init__(self, strict: bool | None = None):
        self.strict = _strict_from_env() if strict is None else strict
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._items: dict[str, dict[str, tuple[type, PluginInfo]]] = {k: {} for k in KINDS}
        self._load()

    # -- loading

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        if self.strict:
            raise PluginError(f"plugin {info.distribution} ({info.name}): {message}")
        print(f"vlbench: skipped plugin {info.distribution} ({info.name}): {message}", file=sys.stderr)

    def _load(self) -> None:
        allow = _env_list("VLBENCH_PLUGINS")
        block = _env_list("VLBENCH_DISABLE_PLUGINS") or set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
            dist = ep.dist.name if ep.dist else "unknown"
            keys = {dist.lower(), ep.name.lower()}
            if (allow is not None and not keys & allow) or keys & block:
                continue
            info = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else "unknown")
            self.plugins.append(info)
            try:
                module = ep.load()
                self.pm.register(module, name=f"{dist}:{ep.name}")
            except Exception as e:  # a broken plugin must not take the CLI down
                self._fail(info, f"import failed: {type(e).__name__}: {e}")
                continue
            for kind in KINDS:
                self._call_hook(info, module, kind)

    def _call_hook(self, info: PluginInfo, module: Any, kind: str) -> None:
        impl = getattr(module, HOOKS[kind], None)
        if impl is None:
            return
        staged: list[type] = []

        def register(cls: type) -> None:
            if not (isinstance(cls, type) and issubclass(cls, KINDS[kind])):
                raise PluginError(f"register() for {kind}s got {cls!r}, not a {KINDS[kind].__name__} subclass")
            if not getattr(cls, "name", None):
                raise PluginError(f"{cls.__name__} has no name")
            staged.append(cls)

        try:
            impl(register=register)
        except Exception as e:
            self._fail(info, f"{HOOKS[kind]} raised {type(e).__name__}: {e}")
            return
        for cls in staged:
            existing = self._items[kind].get(cls.name)
            if existing is not None:
                raise PluginError(
                    f"{kind} name {cls.name!r} is registered by both {existing[1].distribution} "
                    f"and {info.distribution}; uninstall or disable one (VLBENCH_DISABLE_PLUGINS)"
                )
            self._items[kind][cls.name] = (cls, info)
            info.registered[kind].append(cls.name)

    # -- lookups

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def get(self, kind: str, name: str) -> type:
        if name not in self._items[kind]:
            known = self.names(kind)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise VLBenchError(f"unknown {kind} {name!r} (known: {', '.join(known) or 'none'}){hint}")
        return self._items[kind][name][0]

    def origin(self, kind: str, name: str) -> PluginInfo:
        self.get(kind, name)
        return self._items[kind][name][1]

    def provenance(self, kind: str, name: str) -> dict[str, str]:
        info = self.origin(kind, name)
        return {"name": name, "distribution": info.distribution, "version": info.version}


_registry: Registry | None = None


def registry(strict: bool | None = None) -> Registry:
    """The process-wide registry (reloaded when strictness is requested explicitly)."""
    global _registry
    if _registry is None or (strict is not None and strict != _registry.strict):
        _registry = Registry(strict=strict)
    return _registry
