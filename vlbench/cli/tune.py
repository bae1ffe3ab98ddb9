"""`vlbench tune`: spend the tuning ruleset's trials on a condenser's declared search space (vlbench/tuning/studies.py).

cli.py wires it in with `add_tune_command(subparsers)`.
"""
from __future__ import annotations

import argparse

import yaml

from vlbench.cli.options import backbone_assignments
from vlbench.core import VLBenchError, cache_dir
from vlbench.parallel import JOBS_HELP
from vlbench.provenance import add_allow_dirty_flag, check_recordable, current_source
from vlbench.sweep.executors import EXECUTORS, make_executor
from vlbench.tuning.tuned import Target, declared_space


def add_tune_command(subparsers: argparse._SubParsersAction) -> None:
    tune = subparsers.add_parser(
        "tune", help="tune a condenser's declared options under the tuning ruleset (val, Optuna); resumable")
    tune.add_argument("--condenser", required=True, help="condenser name (its search space: vlbench list --options NAME)")
    tune.add_argument("--budget", type=int, required=True, help="number of image-text pairs")
    tune.add_argument("--dataset", default="synthscenes", help="data set name (default: synthscenes)")
    tune.add_argument("--backbone", default="tinyvit-minilm", help="backbone name (default: tinyvit-minilm)")
    tune.add_argument("--backbone-opt", action="append", default=[], metavar="KEY=VALUE",
                      help="a backbone option (repeatable), typed by its default; the study and its tuned file are "
                           "those of the backbone with these options")
    tune.add_argument("--data-root", help="directory holding the data set's images and annotations")
    tune.add_argument("--trials", type=int, help="trials to count (default: the ruleset's; more marks the board's row)")
    tune.add_argument("--storage", help="Optuna storage URL (default: sqlite:///results/tuning/studies/STUDY.db)")
    tune.add_argument("--results", default="results/tuning", help="where the trials' records go (default: results/tuning)")
    tune.add_argument("--executor", choices=EXECUTORS, default="local", help="where trials run (default: local)")
    tune.add_argument("--workers", type=int, default=0,
                      help="trials at once: a local pool of N processes (0: in this process; each gets cores / N), "
                           "or N jobs on SLURM")
    tune.add_argument("--jobs", type=int, metavar="N", default=argparse.SUPPRESS, help=JOBS_HELP)
    tune.add_argument("--submitit", action="append", default=[], metavar="KEY=VALUE",
                      help="a submitit parameter for the slurm / submitit-local executors (repeatable)")
    tune.add_argument("--dry-run", action="store_true", help="print the search space and the study's state, run nothing")
    add_allow_dirty_flag(tune)
    tune.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from vlbench.tuning import studies

    target = Target(args.condenser, args.budget, args.dataset, args.backbone,
                    backbone_options=backbone_assignments(args.backbone, args.backbone_opt))
    space, defaults = declared_space(target.condenser)
    trials = args.trials or studies.RULESET.trials
    print(f"study {target.name}: {trials} trials on {studies.RULESET.split}, seed {studies.RULESET.seed}, "
          f"{studies.RULESET.evals} evaluation models each; search space:")
    for name, s in space.items():
        print(f"  {name}: {s} (default {defaults[name]!r})")
    if args.dry_run:  # creates no study
        fresh = args.storage is None and not studies.default_storage_file(target).exists()
        done = 0 if fresh else len(studies.counted(studies.open_study(target, args.storage)))
        print(f"{done} of {trials} trials done; the choice goes to {target.tuned_file}")
        return 0
    check_recordable(args.results, current_source(), args.allow_dirty)  # before the first trial, not in each
    submitit = {}
    for item in args.submitit:
        key, sep, value = item.partition("=")
        if not sep:
            raise VLBenchError(f"--submitit {item!r} must look like key=value")
        submitit[key] = yaml.safe_load(value)
    executor = make_executor(args.executor, workers=args.workers, submitit=submitit,
                             default_log_dir=cache_dir() / "sweeps" / f"tune-{target.name}" / "logs",
                             name=f"vlbench-tune-{target.name}")
    study = studies.tune(target, executor=executor, width=max(args.workers, 1), trials=trials, storage=args.storage,
                        results=args.results, data_root=args.data_root, allow_dirty=args.allow_dirty,
                        echo=lambda line: print(line, flush=True))
    best = studies.best_trial(study)  # one line when every trial failed
    print(f"best: trial {best.number + 1}, mean val recall {best.value:.2f}; written to {target.tuned_file}")
    return 0
