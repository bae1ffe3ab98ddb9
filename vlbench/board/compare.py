"""`vlbench leaderboard --results runs --compare results`: each local row next to the same row elsewhere.

Rows are the leaderboard's own (`vlbench.board.tables.tables`), matched on everything that makes
them comparable: data set and its fingerprint, backbone, protocol, split, condenser, its config
and budget. A difference within the two rows' pooled std counts as noise (the leaderboard's tie
rule). A row with no counterpart says what differs from the nearest one (same condenser and
budget), and a thread count that differs from the other records' is pointed out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from vlbench.board.records import ResultsStore
from vlbench.board.tables import Table, pooled_std, tables
from vlbench.core import VLBenchError

HEADERS = ["Condenser", "Pairs", "Mean ({ours})", "Mean ({theirs})", "Difference", "Note"]
TABLE_FIELDS = ("dataset", "fingerprint", "backbone", "protocol", "split")


def _key(table: Table, row: dict[str, Any]) -> tuple:
    return (*(getattr(table, f) for f in TABLE_FIELDS), row["condenser"], row["config_hash"], row["budget"])


def _mean(row: dict[str, Any]) -> str:
    return f"{row['mean_mean']:.1f} ± {row['mean_std']:.1f}"


def _verdict(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    diff = ours["mean_mean"] - theirs["mean_mean"]
    return "within noise" if abs(diff) <= pooled_std(ours, theirs) else "above" if diff > 0 else "below"


def _threads(records: list[dict[str, Any]], run_ids: list[str]) -> str:
    """The torch thread counts the row's records ran with, e.g. "1" or "1/2"."""
    wanted = set(run_ids)
    return "/".join(sorted({str(r.get("torch_threads", "?")) for r in records if r["run_id"] in wanted}))


def _mismatch(table: Table, row: dict[str, Any], others: list[tuple[Table, dict[str, Any]]]) -> str:
    """What differs from the rows of the same condenser and budget, or that there is none."""
    near = [(t, r) for t, r in others if (r["condenser"], r["budget"]) == (row["condenser"], row["budget"])]
    if not near:
        return "no row with this condenser and budget"
    t, r = near[0]
    diffs = [f"{f} {getattr(table, f)} vs {getattr(t, f)}" for f in TABLE_FIELDS if getattr(table, f) != getattr(t, f)]
    if r["config_hash"] != row["config_hash"]:
        diffs.append(f"config {row['config_hash']} vs {r['config_hash']}")
    return "not comparable: " + ", ".join(diffs)


def comparison(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], names: tuple[str, str],
               split: str = "test") -> str:
    """A markdown table: every row of `ours` with its counterpart in `theirs`."""
    their_rows = [(t, r) for t in tables(theirs, split) for r in t.rows]
    by_key = {_key(t, r): r for t, r in their_rows}
    lines = []
    for table in tables(ours, split):
        for row in table.rows:
            other = by_key.get(_key(table, row))
            if other is None:
                lines.append([row["condenser"], row["budget"], _mean(row), "—", "—", _mismatch(table, row, their_rows)])
                continue
            note = _verdict(row, other)
            threads = _threads(ours, row["run_ids"]), _threads(theirs, other["run_ids"])
            if threads[0] != threads[1]:  # the numbers move a little with the thread count
                note += f"; torch threads {threads[0]} vs {threads[1]}"
            lines.append([row["condenser"], row["budget"], _mean(row), _mean(other),
                          f"{row['mean_mean'] - other['mean_mean']:+.1f}", note])
    if not lines:
        return f"No {split} records in {names[0]} to compare."
    headers = [h.format(ours=names[0], theirs=names[1]) for h in HEADERS]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=("left",) + ("right",) * 4 + ("left",))


def compare_dirs(results: Path, reference: Path, split: str = "test") -> str:
    """`comparison` of the records in two results directories."""
    if not (reference / "records").is_dir():
        raise VLBenchError(f"{reference} holds no records/ to compare with")
    return comparison(ResultsStore(results).records(), ResultsStore(reference).records(),
                      (str(results), str(reference)), split)
