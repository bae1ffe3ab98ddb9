"""The command-line side of plugins: `vlbench plugins` and the `--strict-plugins` flag.

cli.py wires these in: `add_strict_flag(parser)` on the main parser and on every subcommand that
loads plugins (`vlbench plugins` has it already), `add_plugin_commands(subparsers)`, and
`apply_strict_flag(args)` before running a command.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from tabulate import tabulate

from vlbench.core import VLBenchError
from vlbench.plugins import KINDS, STRICT_ENV, PluginInfo, registry


def add_strict_flag(parser: argparse.ArgumentParser) -> None:
    """`--strict-plugins`, accepted before the subcommand and after it.

    Absent unless given (SUPPRESS): otherwise a subcommand's default False would overwrite a
    True parsed before the subcommand.
    """
    parser.add_argument(
        "--strict-plugins", action="store_true", default=argparse.SUPPRESS,
        help=f"fail when any plugin cannot be loaded, instead of skipping it (same as {STRICT_ENV}=1)",
    )


def apply_strict_flag(args: argparse.Namespace) -> None:
    """Load the plugins strictly now, so that a broken one stops the command before any work."""
    if getattr(args, "strict_plugins", False):
        registry(strict=True)


def add_plugin_commands(subparsers: argparse._SubParsersAction) -> None:
    plugins = subparsers.add_parser(
        "plugins", help="list every installed plugin: distribution, version, what it registers, load errors"
    )
    plugins.add_argument("--json", action="store_true", help="print the list as JSON")
    plugins.add_argument("--check", action="store_true",
                         help="also import every registered class (names are imported on first use), exit 1 on a failure")
    add_strict_flag(plugins)
    plugins.set_defaults(func=cmd_plugins)


def _registers(info: PluginInfo) -> str:
    return "; ".join(f"{kind} {', '.join(names)}" for kind, names in info.registered.items() if names) or "-"


def _check() -> list[str]:
    """One line per registered name whose class cannot be imported or is invalid."""
    reg, failures = registry(), []
    for kind in KINDS:
        for name in reg.names(kind):
            try:
                reg.get(kind, name)
            except VLBenchError as e:
                failures.append(str(e))
    return failures


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = registry().plugins
    failures = _check() if args.check else []
    if args.json:
        print(json.dumps([{**asdict(p), "status": p.status} for p in plugins], indent=2))
    elif not plugins:
        print("no vlbench plugins are installed")
    else:
        rows = [(p.distribution, p.version, p.name, _registers(p), p.status) for p in plugins]
        print(tabulate(rows, headers=["distribution", "version", "entry point", "registers", "status"],
                       maxcolwidths=[None, None, None, 60, None]))  # the built-ins register many names
        for p in plugins:
            if p.error:
                print(f"error in {p.distribution} ({p.name}): {p.error}")
            if p.clashes:
                print(f"clash in {p.distribution} ({p.name}): {', '.join(p.clashes)} (also registered elsewhere, so unavailable)")
    out = sys.stderr if args.json else sys.stdout  # the JSON on stdout stays parseable
    for line in failures:
        print(f"check failed: {line}", file=out)
    if args.check and not failures:
        print("check: every registered class imports and is valid", file=out)
    return 1 if failures else 0
