"""The `vlbench` command line: CLI flags over a YAML config over defaults."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from vlbench.api import RunSpec, TrainProtocol, VLBenchError
from vlbench.data_cli import add_data_commands
from vlbench.distill_cli import add_distill_commands
from vlbench.leaderboard import FORMATS
from vlbench.plugin_cli import add_plugin_commands, add_strict_flag, apply_strict_flag
from vlbench.sweep_cli import add_sweep_commands

DEFAULT_RESULTS = "results"
RUN_FLAGS = ("condenser", "budget", "dataset", "data_root", "backbone", "evals", "seed", "device")


def load_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise VLBenchError(f"cannot read config {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(config, dict):
        raise VLBenchError(f"config {path} must be a mapping of option: value, got {type(config).__name__}")
    return config


def spec_from_args(args: argparse.Namespace) -> tuple[RunSpec, str]:
    """Merge defaults, the YAML config and the flags (flags win) into a RunSpec."""
    config = load_config(args.config)
    results = args.results or config.pop("results", None) or DEFAULT_RESULTS
    for flag in RUN_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            config[flag] = value
    if "condenser" not in config:
        raise VLBenchError("no condenser given: pass --condenser NAME (see `vlbench list`)")
    config.setdefault("budget", 0)
    protocol = config.get("protocol") or {}
    if not isinstance(protocol, dict):
        raise VLBenchError("`protocol` in the config must be a mapping")
    try:
        config["protocol"] = TrainProtocol(**protocol)
    except TypeError as e:
        raise VLBenchError(f"bad protocol option: {e}") from e
    return RunSpec.from_dict(config), results


def cmd_run(args: argparse.Namespace) -> int:
    from vlbench.plugins import registry
    from vlbench.runner import run

    spec, results = spec_from_args(args)
    if not registry().get("condenser", spec.condenser).trains_on_full_data and spec.budget <= 0:
        raise VLBenchError(f"budget must be a positive number of pairs, got {spec.budget}")
    record = run(spec, results)
    m = record["metrics"]
    print(f"{spec.condenser} @ {record['budget']} pairs on {spec.dataset}/{spec.backbone}: "
          f"mean recall {m['mean']['mean']:.2f} ± {m['std']['mean']:.2f} over {spec.evals} models "
          f"(record: {results}/records/{record['run_id']}.json)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from vlbench.plugins import registry

    reg = registry()
    for kind in ("condenser", "backbone", "dataset"):
        print(f"{kind}s:")
        for name in reg.names(kind):
            info = reg.origin(kind, name)
            print(f"  {name:<20} {info.distribution} {info.version}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from vlbench.leaderboard import write_leaderboard

    output = Path(args.output) if args.output else None
    text = write_leaderboard(Path(args.results), output, args.format)
    print(text if args.format == "md" else f"wrote {output or Path(args.results) / f'LEADERBOARD.{args.format}'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlbench", description="Vision-language dataset condensation benchmark.")
    add_strict_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="condense, train fresh models, evaluate, record")
    run.add_argument("--condenser", help="condenser name (see `vlbench list`)")
    run.add_argument("--budget", type=int, help="number of image-text pairs to keep")
    run.add_argument("--dataset", help="data set name (default: synthscenes, the embedded one)")
    run.add_argument("--data-root", help="directory holding the data set's images and annotations")
    run.add_argument("--backbone", help="backbone name (default: tinyvit-minilm)")
    run.add_argument("--evals", type=int, help="number of fresh evaluation models (seeds 0..K-1)")
    run.add_argument("--seed", type=int, help="condensing seed")
    run.add_argument("--device", help="auto (CUDA when present), cpu or cuda[:N]")
    run.add_argument("--config", help="YAML file with any of these options (flags override it)")
    run.add_argument("--results", help=f"results directory (default: {DEFAULT_RESULTS})")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list the registered condensers, backbones and data sets")
    lst.set_defaults(func=cmd_list)

    board = sub.add_parser("leaderboard", help="render the leaderboard (markdown, CSV, JSON or HTML page) from the records")
    board.add_argument("--results", default=DEFAULT_RESULTS, help="results directory")
    board.add_argument("--output", help="file to write (default: RESULTS/LEADERBOARD.<format>)")
    board.add_argument("--format", choices=FORMATS, default="md",
                       help="markdown tables, CSV or JSON rows, or an HTML page with plots (default: md)")
    board.set_defaults(func=cmd_leaderboard)
    add_data_commands(sub)
    add_plugin_commands(sub)
    add_distill_commands(sub)
    add_sweep_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        apply_strict_flag(args)
        return args.func(args)
    except VLBenchError as e:
        print(f"vlbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlbench: interrupted; finished stages are cached and the next run resumes from them", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
