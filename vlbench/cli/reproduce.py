"""`vlbench reproduce RECORD`: rerun a recorded run and say whether it reproduces (vlbench/board/reproduce.py).

cli.py wires it in with `add_reproduce_command(subparsers)`.
"""
from __future__ import annotations

import argparse


def add_reproduce_command(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "reproduce", help="rerun the run a record describes (fresh cache) and compare its per-model metrics exactly")
    cmd.add_argument("record", help="a record file, or the run id of a record under results/ or runs/")
    cmd.add_argument("--at-commit", action="store_true",
                     help="run the record's own commit (a temporary git worktree), not this checkout's code")
    cmd.add_argument("--cache", metavar="DIR",
                     help="artifact cache to use (default: a fresh temporary one, so nothing cached is reused)")
    cmd.add_argument("--data-root", help="directory holding the data set's files, where the record's run had one")
    cmd.add_argument("--results", metavar="DIR", help="keep the rerun's record here (default: discarded)")
    cmd.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from vlbench.board.reproduce import find_record, reproduce

    record, path = find_record(args.record)
    where = f"commit {str(record['source'].get('commit'))[:7]}" if args.at_commit else "this checkout's code"
    print(f"rerunning {path} with {where} in {args.cache or 'a fresh cache'}", flush=True)
    comparison = reproduce(record, cache=args.cache, data_root=args.data_root, at_commit=args.at_commit,
                           results=args.results)
    print(comparison.summary())
    return 0 if comparison.matches else 1
