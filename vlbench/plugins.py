"""The plugin manager: every condenser, backbone and data set comes in through entry points.

First-party plugins (``plugins/`` in this repository) are declared in vlbench's own
pyproject under ``[project.entry-points.vlbench]``, exactly like a third party's, so there is
one door for all. A plugin that fails to import or whose hook raises is reported (one line on
stderr) and skipped, unless strict mode (``--strict-plugins`` or ``VLBENCH_STRICT_PLUGINS=1``)
turns that into an error. Two plugins registering the same name is always an error.

``VLBENCH_PLUGINS=a,b`` loads only those plugins and ``VLBENCH_DISABLE_PLUGINS=c`` blocks
some; both take distribution or entry-point names (the built-ins are distribution ``vlbench``).
"""
from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from vlbench import hookspecs
from vlbench.api import Backbone, Condenser, DatasetSource, VLBenchError

GROUP = "vlbench"
KINDS = {"condenser": Condenser, "backbone": Backbone, "dataset": DatasetSource}
HOOKS = {"condenser": "register_condensers", "backbone": "register_backbones", "dataset": "register_datasets"}
ALLOW_ENV, BLOCK_ENV, STRICT_ENV = "VLBENCH_PLUGINS", "VLBENCH_DISABLE_PLUGINS", "VLBENCH_STRICT_PLUGINS"


class PluginError(VLBenchError):
    """A plugin could not be loaded or registered something invalid."""


@dataclass
class PluginInfo:
    """One entry point: where it comes from, what it registered, what went wrong."""

    name: str  # the entry point's name
    distribution: str
    version: str
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None
    disabled: bool = False  # left out by VLBENCH_PLUGINS / VLBENCH_DISABLE_PLUGINS

    @property
    def status(self) -> str:
        return "disabled" if self.disabled else "error" if self.error else "loaded"


def normalize(name: str) -> str:
    """PEP 503 form, so that `VLBench_KMeans` and `vlbench-kmeans` name the same plugin."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _env_names(var: str) -> set[str]:
    return {normalize(v.strip()) for v in os.environ.get(var, "").split(",") if v.strip()}


def _strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in {"1", "true", "yes"}


def _one_line(error: BaseException) -> str:
    # pluggy's validation errors and many import errors span several lines; a report is one.
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def check_plugin_class(kind: str, cls: Any) -> type:
    """What `register()` accepts: a concrete subclass of the kind's interface with a name."""
    base = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"register() for {kind}s got {cls!r}, not a {base.__name__} subclass")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PluginError(f"{cls.__name__} has no `name` string")
    if inspect.isabstract(cls):
        raise PluginError(f"{cls.__name__} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    return cls


class Registry:
    """Loads the plugins once and answers name lookups for each kind."""

    def __init__(self, strict: bool | None = None):
        self.strict = _strict_from_env() if strict is None else strict
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []  # every entry point of the group, loaded or not
        self._items: dict[str, dict[str, tuple[type, PluginInfo]]] = {k: {} for k in KINDS}
        self._load()

    # -- loading

    def _report(self, message: str) -> None:
        if self.strict:
            raise PluginError(message)
        print(f"vlbench: {message}", file=sys.stderr)

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        self._report(f"plugin {info.distribution} ({info.name}) {'failed' if self.strict else 'skipped'}: {message}")

    def _load(self) -> None:
        allow, block = _env_names(ALLOW_ENV), _env_names(BLOCK_ENV)
        seen: set[str] = set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
            info = PluginInfo(ep.name, ep.dist.name if ep.dist else "unknown", ep.dist.version if ep.dist else "unknown")
            keys = {normalize(info.distribution), normalize(ep.name)}
            seen |= keys
            info.disabled = bool((allow and not keys & allow) or keys & block)
            self.plugins.append(info)
            if not info.disabled:
                self._load_plugin(ep, info)
        for var, names in ((ALLOW_ENV, allow), (BLOCK_ENV, block)):
            if names - seen:  # most likely a typo, which would otherwise silently do nothing
                self._report(f"{var} names no installed plugin: {', '.join(sorted(names - seen))}")

    def _load_plugin(self, ep: EntryPoint, info: PluginInfo) -> None:
        try:
            module = ep.load()
            self.pm.register(module, name=f"{info.distribution}:{ep.name}")
        except (Exception, SystemExit) as e:  # a broken plugin must not take the CLI down
            return self._fail(info, f"cannot load {ep.value}: {_one_line(e)}")
        callers = self.pm.get_hookcallers(module) or []
        unknown = sorted(c.name for c in callers if not c.has_spec())
        if unknown:
            self.pm.unregister(module)
            return self._fail(info, f"unknown hook(s) {', '.join(unknown)} (hooks: {', '.join(HOOKS.values())})")
        # Run all of the plugin's hooks before registering anything: a plugin counts whole or not at all.
        staged: list[tuple[str, type]] = []
        for kind, hook in HOOKS.items():
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin is not module:
                    continue
                try:
                    impl.function(register=lambda cls, kind=kind: staged.append((kind, check_plugin_class(kind, cls))))
                except Exception as e:
                    self.pm.unregister(module)
                    return self._fail(info, f"{hook} raised {_one_line(e)}")
        for kind, cls in staged:
            self._add(kind, cls, info)

    def _add(self, kind: str, cls: type, info: PluginInfo) -> None:
        existing = self._items[kind].get(cls.name)
        if existing is not None:
            other = existing[1]
            where = f"twice by {info.distribution}" if other is info else f"by both {other.distribution} and {info.distribution}"
            raise PluginError(
                f"{kind} name {cls.name!r} is registered {where}; uninstall one, "
                f"or block one with {BLOCK_ENV}=<distribution>"
            )
        self._items[kind][cls.name] = (cls, info)
        info.registered[kind].append(cls.name)

    # -- lookups

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def get(self, kind: str, name: str) -> type:
        if name not in self._items[kind]:
            raise VLBenchError(self._unknown(kind, name))
        return self._items[kind][name][0]

    def _unknown(self, kind: str, name: str) -> str:
        known = self.names(kind)
        message = f"unknown {kind} {name!r} (known: {', '.join(known) or 'none'})"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        missing = [f"{p.distribution} ({p.name}, {p.status})" for p in self.plugins if p.status != "loaded"]
        if missing:  # the name may live in a plugin that was not loaded
            message += f"; not loaded: {', '.join(missing)} (see `vlbench plugins`)"
        return message

    def origin(self, kind: str, name: str) -> PluginInfo:
        self.get(kind, name)
        return self._items[kind][name][1]

    def provenance(self, kind: str, name: str) -> dict[str, str]:
        info = self.origin(kind, name)
        return {"name": name, "distribution": info.distribution, "version": info.version}


_registry: Registry | None = None


def registry(strict: bool | None = None) -> Registry:
    """The process-wide registry, loaded once so that each failure is reported once.

    It is reloaded only when a strictness other than the loaded one is requested explicitly.
    """
    global _registry
    if _registry is None or (strict is not None and strict != _registry.strict):
        _registry = Registry(strict=strict)
    return _registry
