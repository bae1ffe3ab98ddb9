"""The `vlbench` command line: CLI flags over a YAML config over defaults."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlbench.config import run_config
from vlbench.core import SPLITS, RunSpec, VLBenchError, option_defaults, option_text, resolve_spec, with_eval_backbones
from vlbench.cli.data import add_data_commands
from vlbench.board.render import FORMATS
from vlbench.parallel import JOBS_HELP, set_jobs
from vlbench.cli.plugins import add_plugin_commands, add_strict_flag, apply_strict_flag
from vlbench.plugins import KINDS, Registry, registry
from vlbench.progress import shown
from vlbench.provenance import add_allow_dirty_flag
from vlbench.board.records import RunRecord
from vlbench.cli.reproduce import add_reproduce_command
from vlbench.cli.show import add_show_command
from vlbench.spaces import search_space
from vlbench.cli.sweep import add_sweep_commands
from vlbench.cli.options import with_assignments
from vlbench.cli.tune import add_tune_command
from vlbench.tuning.tuned import with_tuned

if TYPE_CHECKING:
    from vlbench.runner import Run

#: Where `vlbench run` writes by default: a user directory, never the committed `results/`.
DEFAULT_RESULTS = "runs"
RUN_FLAGS = ("condenser", "budget", "dataset", "data_root", "backbone", "evals", "seed", "split", "device", "tuned")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
VERBOSE_HELP = "show debug messages too (or set VLBENCH_LOG to debug, info (default), warning or error)"


def specs_from_args(args: argparse.Namespace) -> tuple[list[RunSpec], str]:
    """Merge defaults, the YAML config and the flags (flags win) into checked RunSpecs, before any work:
    one per evaluation backbone (`--eval-backbone a,b`, `eval_backbones: [a, b]`), else one."""
    flags = {flag: getattr(args, flag) for flag in RUN_FLAGS}
    config = with_eval_backbones(run_config(args.config, flags))
    results = args.results or config.pop("results", None) or DEFAULT_RESULTS
    names = args.eval_backbone.split(",") if args.eval_backbone else config.pop("eval_backbone", None)
    given = {flag: value for flag, value in flags.items() if value is not None}
    config = with_assignments({**config, **given}, args.option, args.backbone_opt)
    specs = [resolve_spec(with_tuned({**config, "eval_backbone": name}))
             for name in (names if isinstance(names, list) else [names])]
    return specs, results


def cmd_run(args: argparse.Namespace) -> int:
    specs, results = specs_from_args(args)
    reg = registry()
    for spec in specs:
        for kind, name in (("condenser", spec.condenser), ("backbone", spec.backbone), ("dataset", spec.dataset),
                           ("backbone", spec.eval_backbone or spec.backbone)):
            reg.origin(kind, name)  # an unknown name fails here, before torch is imported
    from vlbench.runner import Run

    # Every run is resolved (budget, text encoders, full) before the first starts; they read one data set.
    runs = [Run(specs[0])]
    runs += [Run(spec, dataset=runs[0].dataset) for spec in specs[1:]]
    for run_ in runs:  # one condensed set (cached) for all
        run_one(run_, results, args.force, args.allow_dirty)
    return 0


def run_one(run_: Run, results: str, force: bool, allow_dirty: bool = False) -> None:
    from vlbench.runner import recorded, run

    spec = run_.spec
    record = None if force else recorded(run_, results)
    if record is not None:
        print(f"already recorded in {results}/records/{record.run_id}.json (pass --force to run it again)")
    else:
        print(expected_time(run_, [results, DEFAULT_RESULTS, "results"]), flush=True)
        record = run(run_, results, history_dirs=[DEFAULT_RESULTS, "results"], allow_dirty=allow_dirty)
        print(stage_summary(record))
    mean, std = record.mean_recall
    evaluated = f", evaluated on {spec.eval_backbone}" if spec.eval_backbone else ""
    print(f"{spec.condenser} @ {record.budget} pairs on {spec.dataset}/{spec.backbone}{evaluated}: "
          f"mean recall on {spec.split} {mean:.2f} ± {std:.2f} over {spec.evals} models "
          f"(record: {results}/records/{record.run_id}.json)")


def expected_time(run_: Run, results_dirs: list[str]) -> str:
    """An overall ETA before a run starts: the median wall time of earlier records of the same run (`Run.shape`:
    condenser and its effective config, budget, backbone, data set; cold caches take longer: the one-off
    work is in README.md)."""
    import statistics

    from vlbench.progress import history, same_run

    times = [sum(r.stage_seconds.values()) for r in same_run(history(results_dirs), run_.shape)]
    if not times:
        return "expected time: unknown (no earlier record of this run; README.md lists the one-off costs)"
    return (f"expected time: about {statistics.median(times) / 60:.1f} min with warm caches "
            f"(median of {len(times)} earlier record{'s' if len(times) > 1 else ''})")


def stage_summary(record: RunRecord) -> str:
    """Where the time went: each stage, and each shared stage the condenser used (built now or reused)."""
    reused = " (condensed set reused)" if record.condensed_reused else ""
    lines = [f"  {name:<9} {seconds:8.1f} s" + _cores(record["stages"][name]) + (reused if name == "condense" else "")
             for name, seconds in record.stage_seconds.items()]
    for shared in record.shared_costs:
        how = "built now" if shared.built_now else f"reused, built by run {shared.built_by or 'unknown'}"
        wall = "?" if shared.wall_s is None else f"{shared.wall_s:.1f}"
        lines.append(f"    {shared.stage}: {wall} s ({how})")
    where = record.condensed_path
    return "\n".join(["stages:", *lines] + ([f"condensed set: {where}"] if where else []))


def _cores(stage: dict[str, Any]) -> str:
    """A stage's CPU time as cores kept busy on average (records before it have none)."""
    cpu, wall = stage.get("cpu_s"), stage["wall_s"]
    return f" ({cpu:.1f} s CPU, {cpu / wall:.1f} cores)" if cpu is not None and wall > 0 else ""


def cmd_list(args: argparse.Namespace) -> int:
    reg = registry()
    if args.options:
        print(plugin_options(reg, args.options))
        return 0
    for kind in KINDS:
        print(f"{kind}s:")
        for name in reg.names(kind):
            info = reg.origin(kind, name)
            print(f"  {name:<20} {info.distribution} {info.version}")
    return 0


def plugin_options(reg: Registry, name: str) -> str:
    """Every option of the plugins called `name` (a condenser, a backbone, a data set): default, type and help."""
    kinds = [kind for kind in KINDS if name in reg.names(kind)]
    if not kinds:
        known = sorted({n for kind in KINDS for n in reg.names(kind)})
        close = difflib.get_close_matches(name, known, n=1)
        raise VLBenchError(f"no plugin is called {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                           + "; `vlbench list` names them all")
    blocks = []
    for kind in kinds:
        cls, info = reg.get(kind, name), reg.origin(kind, name)
        rows = option_rows(cls)
        lines = [f"{kind} {name} ({info.distribution} {info.version}): " + ("options:" if rows else "no options")]
        width = max((len(row[0]) for row in rows), default=0)
        space = search_space(cls.Config) if dataclasses.is_dataclass(getattr(cls, "Config", None)) else {}
        lines += [f"  {option:<{width}}  {default:<12} {help}".rstrip()
                  + (f" [tuned: {space[option]}]" if option in space else "") for option, default, help in rows]
        if kind == "condenser":
            lines.append("  the tuning ruleset (vlbench tune) tries the [tuned: ...] options' spaces" if space else
                         "  nothing to tune: the tuning ruleset runs it at its defaults (0 trials)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def option_rows(cls: type) -> list[tuple[str, str, str]]:
    """(option, default as YAML writes it, help) of a plugin class: its `Config` fields, else its `defaults`."""
    config = getattr(cls, "Config", None)
    if config is None:
        return [(k, option_text(v), "")
                for k, v in getattr(cls, "defaults", {}).items()]
    defaults = option_defaults(config)
    return [(f.name, option_text(defaults[f.name]),
             f.metadata.get("help", "")) for f in dataclasses.fields(config)]


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from vlbench.board.render import write_leaderboard

    output = Path(args.output) if args.output else None
    text = write_leaderboard(Path(args.results), output, args.format, split=args.split, min_seeds=args.min_seeds)
    if args.compare:  # the board is in its file; the comparison is what the user asked to see
        from vlbench.board.compare import compare_dirs

        print(compare_dirs(Path(args.results), Path(args.compare), args.split))
        return 0
    print(text if args.format == "md" else f"wrote {output or Path(args.results) / f'LEADERBOARD.{args.format}'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlbench", description="Vision-language dataset condensation benchmark.")
    add_strict_flag(parser)
    parser.add_argument("--traceback", action="store_true", help="print the full trace of an error, not one line")
    parser.add_argument("--jobs", type=int, metavar="N", help=JOBS_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="condense, train fresh models, evaluate, record")
    run.add_argument("--condenser", help="condenser name (see `vlbench list`)")
    run.add_argument("--budget", type=int, help="number of image-text pairs to keep")
    run.add_argument("--dataset", help="data set name (default: synthscenes, the embedded one)")
    run.add_argument("--data-root", help="directory holding the data set's images and annotations")
    run.add_argument("--backbone", help="backbone name (default: tinyvit-minilm)")
    run.add_argument("--eval-backbone", metavar="NAME[,NAME...]",
                     help="evaluate the set with fresh models of these backbones (same text encoder), one record each; "
                          "the set is condensed once, with --backbone")
    run.add_argument("--evals", type=int, help="number of fresh evaluation models (seeds 0..K-1)")
    run.add_argument("--seed", type=int, help="condensing seed")
    add_strict_flag(run)
    run.add_argument("--force", action="store_true", help="run again even if this exact run is already recorded")
    add_allow_dirty_flag(run)
    run.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                     help="print the full trace of an error (a failing plugin, say), not one line")
    run.add_argument("--jobs", type=int, metavar="N", default=argparse.SUPPRESS, help=JOBS_HELP)
    run.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    run.add_argument("--split", choices=SPLITS, help="split to evaluate on: test (default; report) or val (choose)")
    run.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help="a condenser option (repeatable), typed by its default; see `vlbench list`")
    run.add_argument("--backbone-opt", action="append", default=[], metavar="KEY=VALUE",
                     help="a backbone option (repeatable), typed by its default")
    run.add_argument("--device", help="auto (CUDA when present), cpu or cuda[:N]")
    run.add_argument("--tuned", action="store_const", const=True,
                     help="use the options the tuning ruleset chose for this condenser, budget and data set "
                          "(configs/tuned/; `vlbench tune` makes them); -o options override them")
    run.add_argument("--config", help="YAML file with any of these options (flags override it), or a sweep file: "
                                      "flags on what its grid varies pick one of its runs (e.g. --budget 100)")
    run.add_argument("--results", help=f"results directory (default: {DEFAULT_RESULTS}/; the committed board is results/)")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list the registered condensers, backbones, data sets and shared stages")
    lst.add_argument("--options", metavar="NAME", help="print the options of the plugin NAME: defaults and help")
    lst.set_defaults(func=cmd_list)

    board = sub.add_parser("leaderboard", help="render the leaderboard (markdown, CSV, JSON or HTML page) from the records")
    board.add_argument("--results", default="results", help="results directory (default: results, the committed board)")
    board.add_argument("--min-seeds", type=int, default=1,
                       help="only rows with at least this many condensing seeds (the committed board: 3)")
    board.add_argument("--split", choices=SPLITS, default="test",
                       help="records of which evaluation split (default: test; val records are for choosing only)")
    board.add_argument("--output", help="file to write (default: RESULTS/LEADERBOARD.<format>)")
    board.add_argument("--format", choices=FORMATS, default="md",
                       help="markdown tables, CSV or JSON rows, or an HTML page with plots (default: md)")
    board.add_argument("--compare", metavar="DIR",
                       help="print each row of --results next to the same row in DIR (e.g. results, the committed board)")
    board.set_defaults(func=cmd_leaderboard)
    add_data_commands(sub)
    add_plugin_commands(sub)
    add_show_command(sub)
    add_reproduce_command(sub)
    add_sweep_commands(sub)
    add_tune_command(sub)
    registry().add_commands(sub)  # plugins' own commands (`vlbench experts` is the tm plugin's)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # --help's SystemExit included
            sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    except BrokenPipeError:
        # The reader stopped early (`vlbench list | head`): not an error. Point stdout at /dev/null so
        # that the interpreter's own flush at exit cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as the shell reports any command whose reader went away


def log_level(argv: list[str]) -> str:
    """`-v`/`--verbose` anywhere: DEBUG; else $VLBENCH_LOG; else INFO (read before parsing: plugins log as they load)."""
    if "-v" in argv or "--verbose" in argv:
        return "DEBUG"
    level = os.environ.get("VLBENCH_LOG", "info").upper()
    if level not in LOG_LEVELS:
        raise VLBenchError(f"VLBENCH_LOG={level.lower()} is not a log level; use one of {', '.join(LOG_LEVELS).lower()}")
    return level


def _main(argv: list[str] | None) -> int:
    argv, args = sys.argv[1:] if argv is None else argv, None
    try:
        with shown(log_level(argv)):  # messages and progress on stderr: a line on a terminal, log lines elsewhere
            # Plugins add commands, so they load before parsing: strictly if the flag is anywhere.
            registry(strict=True if "--strict-plugins" in argv else None)
            args = build_parser().parse_args(argv)
            apply_strict_flag(args)
            if args.jobs is not None:
                set_jobs(args.jobs)
            return args.func(args)
    except VLBenchError as e:
        if getattr(args, "traceback", False):
            traceback.print_exception(e)
        print(f"vlbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlbench: interrupted; finished stages are cached and the next run resumes from them", file=sys.stderr)
        return 130
