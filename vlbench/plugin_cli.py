"""The command-line side of plugins: `vlbench plugins` and the global `--strict-plugins` flag.

cli.py wires these in: `add_strict_flag(parser)` and `add_plugin_commands(subparsers)` while
building the parser, `apply_strict_flag(args)` before running a command.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from tabulate import tabulate

from vlbench.plugins import STRICT_ENV, PluginInfo, registry


def add_strict_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict-plugins", action="store_true",
        help=f"fail when any plugin cannot be loaded, instead of skipping it (same as {STRICT_ENV}=1)",
    )


def apply_strict_flag(args: argparse.Namespace) -> None:
    """Load the plugins strictly now, so that a broken one stops the command before any work."""
    if args.strict_plugins:
        registry(strict=True)


def add_plugin_commands(subparsers: argparse._SubParsersAction) -> None:
    plugins = subparsers.add_parser(
        "plugins", help="list every installed plugin: distribution, version, what it registers, load errors"
    )
    plugins.add_argument("--json", action="store_true", help="print the list as JSON")
    plugins.set_defaults(func=cmd_plugins)


def _registers(info: PluginInfo) -> str:
    return "; ".join(f"{kind} {', '.join(names)}" for kind, names in info.registered.items() if names) or "-"


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = registry().plugins
    if args.json:
        print(json.dumps([{**asdict(p), "status": p.status} for p in plugins], indent=2))
        return 0
    if not plugins:
        print("no vlbench plugins are installed")
        return 0
    rows = [(p.distribution, p.version, p.name, _registers(p), p.status) for p in plugins]
    print(tabulate(rows, headers=["distribution", "version", "entry point", "registers", "status"]))
    for p in plugins:
        if p.error:
            print(f"error in {p.distribution} ({p.name}): {p.error}")
    return 0
