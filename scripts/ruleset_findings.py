"""The tables of docs/protocol.md's "What the ruleset found", generated from the studies and the board's records.

    python scripts/ruleset_findings.py [--docs docs/protocol.md] [--results results] [--archive results/v2]

Per (data set, backbone, budget) that has a study or a hand-chosen row, one row per tunable method: its study's
val score at the declared defaults (trial 1) and at the best trial with the settings that differ from the
defaults; its board row under the tuned config (test, mean ± std over condensing seeds, record ids in seed
order) and its gain over random with their pooled std; and its row under protocol v2's hand-chosen settings
(the board's own until the tuned row replaces it, then the archive's). The rows of methods with nothing to
tune follow. Replaces the text between the `<!-- ruleset-findings:start -->` and `<!-- ruleset-findings:end -->`
markers, so that no number of those tables is typed by hand.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from vlbench.api import VLBenchError
from vlbench.board.records import ResultsStore
from vlbench.board.tables import collapsed, pooled_std, tables
from vlbench.storage import atomic_write_text
from vlbench.tuning.studies import STUDY_DIR, StoredStudy, best_of, stored_studies

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- ruleset-findings:start -->", "<!-- ruleset-findings:end -->"
UNTUNED = ("0", "—")  # Trials of a row with nothing to tune, and of the full-data reference


def studies(directory: Path) -> dict[tuple, StoredStudy]:
    """{(data set, backbone id, budget, condenser): its study} of every study that made a record."""
    return {study.target: study for study in stored_studies(directory) if study.target is not None}


def board_rows(results: Path) -> dict[tuple, list[dict[str, Any]]]:
    """{(data set, backbone id, budget, condenser): its rows on the test board, ablations left out}."""
    rows: dict[tuple, list[dict[str, Any]]] = {}
    for table in tables(list(ResultsStore(results).records())):
        for row in table.rows:
            if not row["options"] and not row["reference"]:
                rows.setdefault((table.dataset, table.backbone, row["budget"], row["condenser"]), []).append(row)
    return rows


def value(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def study_cell(study: StoredStudy | None) -> str:
    if study is None:
        return "study not run yet"
    defaults, best = study.trials[0], best_of(study.trials)
    if best is None:
        return "every trial failed"
    mark = " §" if defaults.number in study.records and collapsed([study.records[defaults.number]]) else ""
    changed = {k: v for k, v in sorted(best.params.items()) if defaults.params.get(k) != v}
    settings = ", ".join(f"{k} {value(v)}" for k, v in changed.items()) or "the defaults"
    first = "failed" if defaults.value is None else f"{defaults.value:.1f}{mark}"
    return f"{first} → {best.value:.1f} ({best.number + 1}: {settings})"


def row_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    mark = f" § ({row['collapsed']} of {row['models']} models collapsed)" if row["collapsed"] else ""
    ids = ", ".join(run_id[:8] for run_id in row["run_ids"])
    return f"{row['mean_mean']:.1f} ± {row['mean_std']:.1f}{mark} ({ids})"


def gain_cell(row: dict[str, Any] | None, random: dict[str, Any] | None) -> str:
    """The row's gain over random (the board's Gain column) and their pooled std."""
    if row is None or random is None or row is random:
        return "—"
    return f"{row['gain']:+.1f} ({pooled_std(row, random):.1f})"


def findings(found: dict[tuple, StoredStudy], board: dict[tuple, list], archive: dict[tuple, list]) -> str:
    def tuned(key):
        return next((r for r in board.get(key, []) if r["trials"] not in (*UNTUNED, "hand")), None)

    def hand(key):
        return next((r for r in board.get(key, []) + archive.get(key, []) if r["trials"] == "hand"), None)

    targets = sorted({k[:3] for k in found} | {k[:3] for k in board if hand(k)})
    out = []
    for dataset, backbone, budget in targets:
        methods = sorted({k[3] for k in found if k[:3] == (dataset, backbone, budget)}
                         | {k[3] for k in board if k[:3] == (dataset, backbone, budget) and hand(k)})
        random = next(iter(board.get((dataset, backbone, budget, "random"), [])), None)
        lines = []
        for method in methods:
            key = (dataset, backbone, budget, method)
            row, before = tuned(key), hand(key)
            same = " (the same settings)" if row and before and row["config_hash"] == before["config_hash"] else ""
            order = -row["mean_mean"] if row else math.inf  # best tuned row first, methods without one last
            lines.append((order, [method, study_cell(found.get(key)), row_cell(row), gain_cell(row, random),
                                  row_cell(before) + same]))
        plain = sorted((r for k, rows in board.items() if k[:3] == (dataset, backbone, budget)
                        for r in rows if r["trials"] == "0"), key=lambda r: -r["mean_mean"])
        out.append(f"**{dataset} · {backbone} · {budget} pairs**\n\n"
                   "| method | val: defaults → best (trial: settings) | board row, tuned | vs random (pooled std) "
                   "| board row, v2 hand-chosen |\n|---|---|---|---|---|\n"
                   + "".join(f"| {' | '.join(cells)} |\n" for _, cells in sorted(lines, key=lambda l: l[0]))
                   + "".join(f"| {r['condenser']} | nothing to tune | {row_cell(r)} | {gain_cell(r, random)} | |\n"
                             for r in plain))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default=str(ROOT / "docs" / "protocol.md"))
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--archive", default=str(ROOT / "results" / "v2"))
    args = parser.parse_args(argv)
    results = Path(args.results)
    docs = Path(args.docs)
    try:
        text = docs.read_text()
        if START not in text or END not in text:
            raise VLBenchError(f"{docs} lacks the {START} / {END} markers")
        found = studies(results / STUDY_DIR.relative_to("results"))
        block = findings(found, board_rows(results), board_rows(Path(args.archive)))
    except (OSError, VLBenchError) as e:
        print(f"ruleset_findings: {e}", file=sys.stderr)
        return 2
    atomic_write_text(docs, re.sub(f"{re.escape(START)}.*?{re.escape(END)}", lambda _: f"{START}\n{block}{END}",
                                   text, flags=re.S))
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
