"""Land regenerated board rows: copy the records of every complete row (condensing seeds 0, 1 and 2) that a sweep
wrote into another results directory (a clean worktree's) into results/records, and move the records they
supersede into the archive with `git mv`, so that the board shows the new row and the archive keeps the old one.

Every new record of a row lands (the board reads the newest of each seed, as for any rerun). A record is
superseded when it holds the same place on the board: the same table (data set, backbone, protocol),
condenser, budget, ablated options (those set beyond the tuned config), evaluation backbone and split. So a row
made under the tuning ruleset replaces protocol v2's hand-tuned row of that condenser and budget, and a rerun
of an unchanged row replaces its older records.

    python scripts/land_rows.py /work/wt-regen/results            # then: vlbench leaderboard --min-seeds 3
    python scripts/land_rows.py SRC --archive results/v2/records --dry-run
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from vlbench.board.tables import ablated, config_hash, evaluated_on, split_of, table_key

SEEDS = [0, 1, 2]


def place(record: dict) -> str:
    """Where a record's row sits on the board (see the module docstring)."""
    return json.dumps([table_key(record), record["condenser"]["name"], record["budget"], ablated(record),
                       evaluated_on(record), split_of(record)], sort_keys=True)


def land(source: Path, results: Path, archive: Path, dry_run: bool = False) -> list[str]:
    """Land the complete new rows of `source` into `results`; returns one line per row, landed or not."""
    known = {p.name for d in (results / "records", archive) for p in d.glob("*.json")}
    new: dict[str, list[Path]] = {}
    for path in sorted((source / "records").glob("*.json")):
        if path.name not in known:
            new.setdefault(place(json.loads(path.read_text())), []).append(path)
    lines = []
    for key, paths in sorted(new.items()):
        records = [json.loads(p.read_text()) for p in paths]
        name = f"{records[0]['condenser']['name']}@{records[0]['budget']} {json.loads(key)[3] or ''}".strip()
        seeds = sorted({r["spec"]["seed"] for r in records})
        if not set(SEEDS) <= set(seeds):
            lines.append(f"incomplete, not landed: {name} (seeds {seeds})")
            continue
        configs = {config_hash(r) for r in records}
        if len(configs) > 1:  # two settings for one place: which one is the row is for a person to say
            lines.append(f"several configs, not landed: {name} ({' '.join(sorted(configs))})")
            continue
        old = [p for p in sorted((results / "records").glob("*.json")) if place(json.loads(p.read_text())) == key]
        if not dry_run:
            archive.mkdir(parents=True, exist_ok=True)
            for p in old:
                subprocess.run(["git", "mv", str(p), str(archive / p.name)], check=True)
            for p in paths:
                shutil.copy2(p, results / "records" / p.name)
        lines.append(f"{'would land' if dry_run else 'landed'}: {name}, new {' '.join(p.stem[:8] for p in paths)}"
                     f"; archived {' '.join(p.stem[:8] for p in old) or 'none'}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the results directory the sweep wrote into")
    parser.add_argument("--results", type=Path, default=Path("results"), help="where rows land (default: results)")
    parser.add_argument("--archive", type=Path, default=Path("results/v2/records"),
                        help="where superseded records go (default: results/v2/records)")
    parser.add_argument("--dry-run", action="store_true", help="say what would land, move nothing")
    args = parser.parse_args(argv)
    for line in land(args.source, args.results, args.archive, args.dry_run):
        print(line)


if __name__ == "__main__":
    main()
