"""The leaderboard in every format (markdown, summary, CSV, JSON, HTML), and written to a file. Every format
renders the same tables (vlbench/board/tables.py), so they cannot disagree.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from vlbench.board.html import leaderboard_html
from vlbench.board.markdown import leaderboard_markdown, summary_markdown
from vlbench.board.records import ResultsStore
from vlbench.board.tables import cross_tables, tables, with_min_seeds
from vlbench.storage import atomic_write_text

FORMATS = ("md", "csv", "json", "html", "summary")


def leaderboard_csv(records: list[dict[str, Any]], split: str = "test") -> str:
    """One line per row of every table; numbers unformatted, recall in percent."""
    out = io.StringIO()
    writer = None
    for table in tables(records, split):
        for row in table.rows:
            line = {"dataset": table.dataset, "data_fingerprint": table.fingerprint, "backbone": table.backbone,
                    "protocol": table.protocol, "split": table.split, **row, "run_ids": " ".join(row["run_ids"]),
                    "config": json.dumps(row["config"], sort_keys=True), "seeds": " ".join(map(str, row["seeds"])),
                    "evals": " ".join(map(str, row["evals"]))}
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(line), lineterminator="\n")
                writer.writeheader()
            writer.writerow(line)
    return out.getvalue()


def leaderboard_json(records: list[dict[str, Any]], split: str = "test") -> str:
    return json.dumps({
        "generated_by": "vlbench leaderboard",
        "tables": [{"dataset": t.dataset, "data_fingerprint": t.fingerprint, "backbone": t.backbone,
                    "protocol": t.protocol, "split": t.split, "rows": t.rows} for t in tables(records, split)],
        "cross_architecture": [{"dataset": t.dataset, "data_fingerprint": t.fingerprint, "protocol": t.protocol,
                                "split": t.split, "backbones": t.backbones, "rows": t.rows}
                               for t in cross_tables(records, split)],
    }, indent=2) + "\n"


def render(records: list[dict[str, Any]], fmt: str = "md", split: str = "test") -> str:
    renderers = {"md": leaderboard_markdown, "csv": leaderboard_csv, "json": leaderboard_json,
                 "html": leaderboard_html, "summary": summary_markdown}
    if fmt not in renderers:
        raise ValueError(f"unknown leaderboard format {fmt!r} (known: {', '.join(FORMATS)})")
    return renderers[fmt](records, split)


def write_leaderboard(results_dir: Path, output: Path | None = None, fmt: str = "md", split: str = "test",
                      min_seeds: int = 1) -> str:
    """Render the `split` records in `results_dir` (rows with at least `min_seeds` condensing seeds) as
    `fmt` and write them (atomically) to `output` (default: RESULTS/LEADERBOARD.<fmt>, or
    LEADERBOARD-val.<fmt> for the val split)."""
    text = render(with_min_seeds(ResultsStore(results_dir).records(), min_seeds), fmt, split)
    suffix = "" if split == "test" else f"-{split}"
    atomic_write_text(Path(output) if output else Path(results_dir) / f"LEADERBOARD{suffix}.{fmt}", text)
    return text
