"""The quality-compute curve of a distiller at one budget, made from records (issue 15).

    python scripts/quality_curve.py [RESULTS] [--split val] [--condenser tm-lora] [--budget 100] [--output PREFIX]

RESULTS is a results directory (holding records/) or a records directory; default results/tuning.
The points are the leaderboard's rows (`vlbench.board.tables.tables`: mean recall ± std over
condensing seeds, one row per condenser config) of CONDENSER at BUDGET on SPLIT whose configs
differ only in the compute options (`iterations`, `syn_steps`, `unroll`); where several such
families exist, the one with the most rows. Writes PREFIX.png (needs matplotlib: `pip install
'vlbench[report]'`) and PREFIX.md (default RESULTS/quality-curve): mean recall against iterations
and against condensing wall time (the run's own time plus the shared stages it used, such as the
expert buffer), one line per (syn_steps, unroll), with random pairs at BUDGET and at twice it (same
table, same split) as horizontal lines.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from vlbench.api import VLBenchError
from vlbench.board.tables import Table, tables
from vlbench.board.records import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
COMPUTE_KEYS = ("iterations", "syn_steps", "unroll")
UNROLL_DEFAULT = "full"  # records leave `unroll` out of the config at its default (vlbench.tm.condenser)


def compute(row: dict[str, Any]) -> tuple[int, int, str]:
    config = row["config"]
    return config["iterations"], config["syn_steps"], config.get("unroll", UNROLL_DEFAULT)


def _family(row: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in row["config"].items() if k not in COMPUTE_KEYS}, sort_keys=True)


def curve(records: list[dict[str, Any]], split: str, condenser: str, budget: int
          ) -> tuple[Table, list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """(table, the curve's rows sorted by compute, {budget: random row} at budget and 2 x budget)."""
    best: tuple[Table, list[dict[str, Any]]] | None = None
    for table in tables(records, split):
        families: dict[str, list[dict[str, Any]]] = {}
        for row in table.rows:
            if row["condenser"] == condenser and row["budget"] == budget and "iterations" in row["config"]:
                families.setdefault(_family(row), []).append(row)
        for rows in families.values():
            if best is None or len(rows) > len(best[1]):
                best = table, rows
    if best is None:
        raise VLBenchError(f"no {split}-split records of {condenser} at {budget} pairs with an `iterations` option")
    table, rows = best
    by_id = {r["run_id"]: r for r in records}
    for row in rows:
        row["distil_s"] = _own_seconds([by_id[i] for i in row["run_ids"]])
    randoms: dict[int, dict[str, Any]] = {}
    for row in sorted(table.rows, key=lambda r: len(r["seeds"])):  # the random row with the most seeds wins
        if row["condenser"] == "random" and row["budget"] in (budget, 2 * budget):
            randoms[row["budget"]] = row
    return table, sorted(rows, key=compute), randoms


def _own_seconds(runs: list[dict[str, Any]]) -> float | None:
    """Mean over condensing seeds of the distiller's own wall time: without the shared stages, which are
    the same for every point of a curve (one expert buffer) and may predate cost stamps (then unknown)."""
    own = [(run["condensed"].get("cost") or {}).get("own_s") for run in runs]
    return None if None in own else statistics.fmean(own)


def _recall(row: dict[str, Any]) -> str:
    spread = "" if row["std_over"] == "seeds" else " (std over evaluation models)"
    return f"{row['mean_mean']:.1f} ± {row['mean_std']:.1f}{spread}"


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f}"


def markdown(table: Table, rows: list[dict[str, Any]], randoms: dict[int, dict[str, Any]]) -> str:
    body = [[*compute(r), _recall(r), ", ".join(map(str, r["seeds"])), _minutes(r["distil_s"]),
             _minutes(r["condense_wall_s"]), " ".join(r["run_ids"])] for r in rows]
    body += [[f"random, {pairs} pairs", "—", "—", _recall(r), ", ".join(map(str, r["seeds"])), "—", "—",
              " ".join(r["run_ids"])] for pairs, r in sorted(randoms.items())]
    headers = ["iterations", "syn_steps", "unroll", "mean recall (%)", "condensing seeds",
               "distil time (min)", "condense time (min)", "records"]
    return (f"### {rows[0]['condenser']} at {rows[0]['budget']} pairs: quality against compute\n\n"
            f"{table.heading}\n\n{tabulate(body, headers=headers, tablefmt='github', disable_numparse=True)}\n\n"
            "Mean recall: mean ± std over condensing seeds, each the mean of its evaluation models. Distil "
            "time: the run's own wall time, mean over seeds; condense time: that plus the shared stages it "
            "used (expert buffer; — where their build predates cost stamps); random rows: the same budget and "
            "twice it, as reference lines.\n")


def plot(path: Path, table: Table, rows: list[dict[str, Any]], randoms: dict[int, dict[str, Any]]) -> None:
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FormatStrFormatter
    except ImportError as e:
        raise VLBenchError("the curve is plotted with matplotlib: pip install 'vlbench[report]'") from e

    fig = Figure(figsize=(10, 4))
    by_iterations, by_time = fig.subplots(1, 2, sharey=True)
    lines: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(compute(row)[1:], []).append(row)
    for (syn_steps, unroll), points in lines.items():
        label = f"{rows[0]['condenser']}, syn_steps {syn_steps}, {unroll} unroll"
        mean, std = [r["mean_mean"] for r in points], [r["mean_std"] for r in points]
        container = by_iterations.errorbar([compute(r)[0] for r in points], mean, yerr=std, marker="o", capsize=3,
                                           label=label)
        timed = [(r["distil_s"] / 60, r["mean_mean"], r["mean_std"]) for r in points if r["distil_s"]]
        if timed:
            by_time.errorbar(*zip(*timed), marker="o", capsize=3, color=container.lines[0].get_color(), label=label)
    for (pairs, row), style in zip(sorted(randoms.items()), ("--", ":")):
        for ax in (by_iterations, by_time):
            ax.axhline(row["mean_mean"], color="black", linestyle=style, label=f"random, {pairs} pairs")
            ax.axhspan(row["mean_mean"] - row["mean_std"], row["mean_mean"] + row["mean_std"], color="black",
                       alpha=0.08, linewidth=0)
    iterations = sorted({compute(r)[0] for r in rows})
    by_iterations.set_xscale("log")
    by_iterations.set_xticks(iterations, [str(i) for i in iterations])
    by_iterations.minorticks_off()
    by_iterations.set_xlabel("distillation iterations")
    by_iterations.set_ylabel(f"mean recall (%), {table.split} split")
    by_time.set_xscale("log")
    for axis in ("major", "minor"):  # 20, not 2 x 10^1
        getattr(by_time.xaxis, f"set_{axis}_formatter")(FormatStrFormatter("%g"))
    by_time.set_xlabel("distil wall time (min; the shared expert buffer excluded)")
    for ax in (by_iterations, by_time):
        ax.grid(True, alpha=0.3)
    by_iterations.legend(fontsize="small")
    fig.suptitle(f"{rows[0]['condenser']} at {rows[0]['budget']} pairs · {table.dataset} · {table.backbone} · "
                 f"protocol {table.protocol}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=ROOT / "results" / "tuning",
                        help="a results directory (holding records/) or a records directory")
    parser.add_argument("--split", default="val")
    parser.add_argument("--condenser", default="tm-lora")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--output", type=Path, help="path prefix of the .png and .md (default RESULTS/quality-curve)")
    args = parser.parse_args(argv)
    results = args.results.parent if args.results.name == "records" else args.results
    if not (results / "records").is_dir():
        raise VLBenchError(f"{results} holds no records/ directory")
    table, rows, randoms = curve(ResultsStore(results).records(), args.split, args.condenser, args.budget)
    prefix = args.output or results / "quality-curve"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    plot(Path(f"{prefix}.png"), table, rows, randoms)
    Path(f"{prefix}.md").write_text(markdown(table, rows, randoms))
    print(f"{prefix}.png, {prefix}.md: {len(rows)} points, random at {sorted(randoms) or 'no budget'}")


if __name__ == "__main__":
    try:
        main()
    except VLBenchError as e:
        sys.exit(f"quality_curve: {e}")
