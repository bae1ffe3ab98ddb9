"""Rerun seed 0 of every row of the committed board through `vlbench reproduce` and print the result table.

    OMP_NUM_THREADS=1 python scripts/reproduce_board.py [--only random@100 tm-lora@100 ...] [--cache DIR]

A row is a (condenser, its options, budget) of results/records on the test split; its seed-0 record is
the newest one. One fresh cache (temporary, or --cache DIR to keep it and resume) serves every row, so
nothing an earlier run cached is reused while shared work (text features, expert buffers, reference
models) is built once. Each rerun's record goes to runs/reproduce/. Hours of CPU for the whole board.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from vlbench.board.reproduce import reproduce
from vlbench.board.records import ResultsStore, RunRecord
from vlbench.board.tables import ablated, evaluated_on

BOARD = Path(__file__).resolve().parent.parent / "results"
DEFAULT_TABLE = ["synthscenes", "tinyvit-minilm"]  # its rows go by their plain names


def row(record: RunRecord) -> str:
    """`tm-lora@100`, `lors@500 lr_sim=0.0`: the options beyond the row's tuned config, as the table names an
    ablation (a tuned row is named by its condenser alone); a row of another table names it first: data set,
    condensing backbone and, where it differs, the evaluated one (`emoji/tinyvit-minilm-f708a675:random@100`)."""
    options = ablated(record)
    name = f"{record.condenser}@{record.budget}" + "".join(f" {k}={v}" for k, v in sorted(options.items()))
    place = [record["dataset"]["name"], record["backbone"]["id"]]
    if evaluated_on(record) != record["backbone"]["id"]:
        place.append(evaluated_on(record))
    return name if place == DEFAULT_TABLE else "/".join(place) + ":" + name


def seed_zero_rows() -> dict[str, RunRecord]:
    """{row: its newest seed-0 test record} of the committed board."""
    rows: dict[str, RunRecord] = {}
    for record in ResultsStore(BOARD).records():  # oldest first: the newest wins
        if record["spec"]["seed"] == 0 and record["split"] == "test":
            rows[row(record)] = record
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="ROW", help="rows to rerun, as the table names them")
    parser.add_argument("--cache", help="cache shared by the reruns (default: a fresh temporary one)")
    args = parser.parse_args()
    rows = seed_zero_rows()
    unknown = set(args.only or []) - set(rows)
    if unknown:
        parser.error(f"no such row: {', '.join(sorted(unknown))} (rows: {', '.join(rows)})")
    with tempfile.TemporaryDirectory(prefix="vlbench-board-") as tmp:
        lines = ["| row | record | recorded | rerun | result |", "|---|---|---|---|---|"]
        for name, record in rows.items():
            if args.only and name not in args.only:
                continue
            comparison = reproduce(record, cache=args.cache or tmp, results="runs/reproduce")
            result = "reproduces exactly" if comparison.matches else comparison.summary().split("now; ", 1)[-1]
            lines.append(f"| {name} | {record.run_id} | {record.mean_recall[0]:.2f} | {comparison.rerun.mean_recall[0]:.2f} "
                         f"| {result} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
