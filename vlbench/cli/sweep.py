"""`vlbench sweep SWEEP.yaml`: plan a grid of runs, print it, and (unless --dry-run) execute it.

cli.py wires it in with `add_sweep_commands(subparsers)`.
"""
from __future__ import annotations

import argparse

from vlbench.parallel import JOBS_HELP
from vlbench.provenance import add_allow_dirty_flag, check_recordable, current_source
from vlbench.sweep.plan import describe, load_sweep, make_plan, missing, run_plan
from vlbench.sweep.executors import EXECUTORS, count, make_executor


def add_sweep_commands(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser(
        "sweep", help="run a grid of runs locally or on SLURM (submitit); skips runs already recorded")
    sweep.add_argument("file", help="sweep YAML: a `grid` of run options, any of them a list (see docs/sweeps.md)")
    sweep.add_argument("--dry-run", action="store_true", help="print the runs it would launch and which are done")
    sweep.add_argument("--executor", choices=EXECUTORS, help="where tasks run (overrides the file; default: local)")
    sweep.add_argument("--workers", type=int, help="local executor: processes in the pool (0: in this process)")
    sweep.add_argument("--jobs", type=int, metavar="N", default=argparse.SUPPRESS, help=JOBS_HELP)
    sweep.add_argument("--retries", type=int, help="relaunches of a failed task within this sweep")
    sweep.add_argument("--results", help="results directory (overrides the file; default: results)")
    add_allow_dirty_flag(sweep)
    sweep.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.file, executor=args.executor, workers=args.workers, retries=args.retries,
                       results=args.results, allow_dirty=args.allow_dirty)
    plan = make_plan(sweep)
    print(f"sweep {sweep.name} ({sweep.executor} executor, results in {sweep.results}): {describe(plan)}", flush=True)
    if args.dry_run or not plan.pending:
        return 0
    check_recordable(sweep.results, current_source(), sweep.allow_dirty)  # before the first task, not in each
    executor = make_executor(sweep.executor, workers=sweep.workers, submitit=sweep.submitit,
                             default_log_dir=sweep.log_dir, name=f"vlbench-{sweep.name}")
    run_plan(plan, executor, sweep.retries, echo=lambda line: print(line, flush=True))
    left = missing(plan)
    if left:
        print(f"{len(left)} of {count(len(plan.runs), 'run')} {'has' if len(left) == 1 else 'have'} no record; "
              f"rerun `vlbench sweep {args.file}` to retry {'it' if len(left) == 1 else 'them'}")
        return 1
    print(f"{'the run is' if len(plan.runs) == 1 else f'all {len(plan.runs)} runs'} recorded in {sweep.results}")
    return 0
