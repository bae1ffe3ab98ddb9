"""The plugin manager: every condenser, backbone, data set, shared stage and plugin command comes
in through entry points.

First-party plugins (``plugins/`` in this repository) are declared in vlbench's own
pyproject under ``[project.entry-points.vlbench]``, exactly like a third party's, so there is
one door for all. A hook registers a class, or a name and the class's import path
(``register("pkg.module:Class", name="mine")``): such a module is imported only when its name is
used, so that listing names (`vlbench list`, `vlbench plugins`) imports no torch.

Faults stay contained. A plugin that fails to import or whose hook raises is reported (one line
on stderr) and skipped; a name registered twice (by two distributions, or twice by one) is
reported and left out, and every other name keeps working. Strict mode (``--strict-plugins`` or
``VLBENCH_STRICT_PLUGINS=1``) turns each of these into an error.

``VLBENCH_PLUGINS=a,b`` loads only those and ``VLBENCH_DISABLE_PLUGINS=c`` blocks some. An item
is a distribution (the built-ins are distribution ``vlbench``), an entry point, a registered name,
or ``distribution:name``. A blocked distribution or entry point is not even imported. A bare
name blocks that name from third-party distributions only (a built-in one is blocked as
``vlbench:name``), so that blocking a clashing name never removes the built-in by accident.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import logging
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from vlbench import hookspecs
from vlbench.provenance import import_hashes
from vlbench.core import PluginError, VLBenchError
from vlbench.spaces import check_space

log = logging.getLogger(__name__)
GROUP = "vlbench"
BUILTIN = "vlbench"  # the distribution of the first-party plugins
KINDS = ("condenser", "backbone", "dataset", "stage")
INTERFACES = {"condenser": "vlbench.api:Condenser", "backbone": "vlbench.api:Backbone",
              "dataset": "vlbench.api:DatasetSource", "stage": "vlbench.stages:Stage"}
HOOKS = {"condenser": "register_condensers", "backbone": "register_backbones", "dataset": "register_datasets",
         "stage": "register_stages"}
COMMANDS_HOOK = "register_commands"  # gets the CLI's subparsers, not a `register` callback
ALLOW_ENV, BLOCK_ENV, STRICT_ENV = "VLBENCH_PLUGINS", "VLBENCH_DISABLE_PLUGINS", "VLBENCH_STRICT_PLUGINS"
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class PluginInfo:
    """One entry point: where it comes from, what it registered, what went wrong."""

    name: str  # the entry point's name
    distribution: str
    version: str
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None
    disabled: bool = False  # left out by VLBENCH_PLUGINS / VLBENCH_DISABLE_PLUGINS
    clashes: list[str] = field(default_factory=list)  # one line per name it shares with another registration

    @property
    def status(self) -> str:
        return "disabled" if self.disabled else "error" if self.error else "clash" if self.clashes else "loaded"


@dataclass
class Entry:
    """A registered name: its class, or the class's import path until the name is first used."""

    kind: str
    name: str
    target: type | str
    info: PluginInfo


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
    module, _, interface = INTERFACES[kind].partition(":")
    base = getattr(importlib.import_module(module), interface)  # vlbench.api imports torch: only now
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"register() for {kind}s got {cls!r}, not a {base.__name__} subclass")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PluginError(f"{cls.__name__} has no `name` string")
    if inspect.isabstract(cls):
        raise PluginError(f"{cls.__name__} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    try:  # the study's first trial is the declared default: it must be a point of the space
        if dataclasses.is_dataclass(getattr(cls, "Config", None)):
            check_space(cls.Config, f"{kind} {cls.name!r}")
    except VLBenchError as e:
        raise PluginError(str(e)) from e
    return cls


def _selected(e: Entry, allow: set[str], block: set[str]) -> bool:
    """Whether the allow and block lists keep a registration (see the module docstring)."""
    dist, name = normalize(e.info.distribution), normalize(e.name)
    if f"{dist}:{name}" in block or (name in block and dist != BUILTIN):
        return False
    return not allow or bool({dist, normalize(e.info.name), name, f"{dist}:{name}"} & allow)


def _registration(kind: str, target: Any, name: str | None) -> tuple[str, type | str]:
    """(name, target) of one `register()` call: a class, or an import path with its name."""
    if not isinstance(target, str):
        cls = check_plugin_class(kind, target)
        if name is not None and name != cls.name:
            raise PluginError(f"register() for {kind}s got name={name!r} for {cls.__name__}, whose name is {cls.name!r}")
        return cls.name, cls
    if not IMPORT_PATH.match(target) or not isinstance(name, str) or not name:
        raise PluginError(f"register() for {kind}s got {target!r}: give a class, "
                          f"or an import path 'module:Class' and the name it registers (name=...)")
    return name, target


class Registry:
    """Loads the plugins once and answers name lookups for each kind."""

    def __init__(self, strict: bool | None = None):
        self.strict = _strict_from_env() if strict is None else strict
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []  # every entry point of the group, loaded or not
        self._items: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._clashes: dict[str, dict[str, str]] = {k: {} for k in KINDS}  # name -> the one-line report
        self._loaded: dict[str, PluginInfo] = {}  # pluggy's name of each registered module -> its plugin
        self._load()

    # -- loading

    def _report(self, message: str) -> None:
        if self.strict:
            raise PluginError(message)
        log.warning(message)

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        self._report(f"plugin {info.distribution} ({info.name}) {'failed' if self.strict else 'skipped'}: {message}")

    def _load(self) -> None:
        allow, block = _env_names(ALLOW_ENV), _env_names(BLOCK_ENV)
        eps = sorted(entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name))
        infos = [PluginInfo(ep.name, ep.dist.name if ep.dist else "unknown", ep.dist.version if ep.dist else "unknown")
                 for ep in eps]
        known = {key for info in infos for key in (normalize(info.distribution), normalize(info.name))}
        # Allow-list items that are no plugin are names ("*": any plugin may hold one) or dist:name.
        by_name = {item.partition(":")[0] if ":" in item else "*" for item in allow - known}
        entries: list[Entry] = []
        for ep, info in zip(eps, infos):
            keys = {normalize(info.distribution), normalize(info.name)}
            wanted = not allow or keys & allow or "*" in by_name or normalize(info.distribution) in by_name
            info.disabled = bool(keys & block or not wanted)
            self.plugins.append(info)
            if not info.disabled:
                entries += self._load_plugin(ep, info)
        kept = [e for e in entries if _selected(e, allow, block)]
        for info in infos:  # imported, but the lists left out everything it registers
            mine = [e for e in entries if e.info is info]
            info.disabled = info.disabled or bool(mine) and not any(e.info is info for e in kept)
        self._add(kept)
        self._check_lists(allow, block, known, entries)

    def _check_lists(self, allow: set[str], block: set[str], known: set[str], entries: list[Entry]) -> None:
        """Report list items that match nothing: most likely typos, which would otherwise silently do nothing."""
        qualified = {normalize(f"{e.info.distribution}:{e.name}") for e in entries}
        third_party = {normalize(e.name) for e in entries if normalize(e.info.distribution) != BUILTIN}
        builtin = {normalize(e.name) for e in entries} - third_party
        for var, names, usable in ((ALLOW_ENV, allow, known | qualified | third_party | builtin),
                                   (BLOCK_ENV, block, known | qualified | third_party)):
            if names - usable:
                hint = f" ({BUILTIN}'s own names are blocked as {BUILTIN}:NAME)" if (names - usable) & builtin else ""
                self._report(f"{var} names no installed plugin: {', '.join(sorted(names - usable))}{hint}")

    def _load_plugin(self, ep: EntryPoint, info: PluginInfo) -> list[Entry]:
        try:
            import_hashes.watch(ep.module.partition(".")[0])  # records name the plugin's code as it was imported
            module = ep.load()
            self._loaded[self.pm.register(module, name=f"{info.distribution}:{ep.name}")] = info
        except (Exception, SystemExit) as e:  # a broken plugin must not take the CLI down
            self._fail(info, f"cannot load {ep.value}: {_one_line(e)}")
            return []
        callers = self.pm.get_hookcallers(module) or []
        unknown = sorted(c.name for c in callers if not c.has_spec())
        if unknown:
            self.pm.unregister(module)
            self._fail(info, f"unknown hook(s) {', '.join(unknown)} (hooks: {', '.join([*HOOKS.values(), COMMANDS_HOOK])})")
            return []
        # Run all of the plugin's hooks before registering anything: a plugin counts whole or not at all.
        staged: list[Entry] = []
        for kind, hook in HOOKS.items():
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin is not module:
                    continue

                def register(target: Any, name: str | None = None, kind: str = kind) -> None:
                    staged.append(Entry(kind, *_registration(kind, target, name), info))

                try:
                    impl.function(register=register)
                except Exception as e:
                    self.pm.unregister(module)
                    self._fail(info, f"{hook} raised {_one_line(e)}")
                    return []
        return staged

    def _add(self, entries: list[Entry]) -> None:
        claims: dict[tuple[str, str], list[Entry]] = {}
        for e in entries:
            e.info.registered[e.kind].append(e.name)
            claims.setdefault((e.kind, e.name), []).append(e)
        for (kind, name), claimed in claims.items():
            if len(claimed) == 1:
                self._items[kind][name] = claimed[0]
            else:
                self._clash(kind, name, claimed)

    def _clash(self, kind: str, name: str, claimed: list[Entry]) -> None:
        """One name registered more than once: none is used, and the user is told how to pick one."""
        for info in {id(e.info): e.info for e in claimed}.values():
            info.clashes.append(f"{kind} {name}")
        dists = list(dict.fromkeys(e.info.distribution for e in claimed))
        if len(dists) == 1:
            message = f"{kind} name {name!r} is registered twice by {dists[0]}, so it is unavailable"
        else:
            keep = [f"{d}'s with {BLOCK_ENV}={','.join(f'{o}:{name}' for o in dists if o != d)}" for d in dists]
            message = (f"{kind} name {name!r} is registered by {' and '.join(dists)}, so neither is used; "
                       f"keep {', or '.join(keep)}")
        self._clashes[kind][name] = message
        self._report(message)

    def add_commands(self, subparsers: Any) -> None:
        """Let every plugin in use add its subcommands; one whose hook raises is reported (its commands may be missing)."""
        for impl in getattr(self.pm.hook, COMMANDS_HOOK).get_hookimpls():
            info = self._loaded[impl.plugin_name]
            if info.disabled or info.error:
                continue
            try:
                impl.function(subparsers=subparsers)
            except Exception as e:  # argparse's "conflicting subparser" too
                self._fail(info, f"{COMMANDS_HOOK} raised {_one_line(e)}")

    # -- lookups (none of these imports a plugin module, except `get`)

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def _entry(self, kind: str, name: str) -> Entry:
        if name in self._clashes[kind]:
            raise PluginError(self._clashes[kind][name])
        if name not in self._items[kind]:
            raise VLBenchError(self._unknown(kind, name))
        return self._items[kind][name]

    def get(self, kind: str, name: str) -> type:
        """The class registered under `name`, imported now if it was registered by import path."""
        entry = self._entry(kind, name)
        if isinstance(entry.target, str):
            entry.target = self._import(entry)
        return entry.target

    @staticmethod
    def _import(entry: Entry) -> type:
        module, _, attr = entry.target.partition(":")
        where = f"{entry.kind} {entry.name!r} ({entry.info.distribution} {entry.info.version}, {entry.target})"
        try:
            import_hashes.watch(module.partition(".")[0])
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (Exception, SystemExit) as e:
            raise PluginError(f"{where} cannot be loaded: {_one_line(e)}") from e
        try:
            cls = check_plugin_class(entry.kind, obj)
        except PluginError as e:
            raise PluginError(f"{where} is invalid: {e}") from e
        if cls.name != entry.name:
            raise PluginError(f"{where} is a class named {cls.name!r}")
        return cls

    def _unknown(self, kind: str, name: str) -> str:
        known = self.names(kind)
        message = f"unknown {kind} {name!r} (known: {', '.join(known) or 'none'})"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        missing = [f"{p.distribution} ({p.name}, {p.status})" for p in self.plugins if p.status in ("disabled", "error")]
        if missing:  # the name may live in a plugin that was not loaded
            message += f"; not loaded: {', '.join(missing)} (see `vlbench plugins`)"
        return message

    def origin(self, kind: str, name: str) -> PluginInfo:
        return self._entry(kind, name).info

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
