"""The results store: one JSON record per run under `<directory>/records/`, written atomically.

One file per run means concurrent runs never write the same file, and the atomic write means a
killed run leaves its record complete or absent, never half-written.
"""
from __future__ import annotations

import json
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlbench.storage import atomic_write_json


def new_run_id(run_key: str) -> str:
    """A unique, sortable run id: run-key prefix, UTC time, random suffix (processes never collide)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{run_key[:8]}-{stamp}-{secrets.token_hex(4)}"


class ResultsStore:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.records_dir = self.directory / "records"

    def add(self, record: dict[str, Any]) -> Path:
        """Write `record` to `records/<run_id>.json`; an existing record is never overwritten."""
        run_id = record["run_id"]
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
            raise ValueError(f"run_id {run_id!r} is not a plain file name")
        path = self.records_dir / f"{run_id}.json"
        if path.exists():
            raise FileExistsError(f"a record for run {run_id} already exists: {path}")
        atomic_write_json(path, record)
        return path

    def records(self) -> list[dict[str, Any]]:
        """All readable records, oldest first; unreadable files are skipped with a warning."""
        out = []
        # Temp files of in-flight writes are named ".<name>.<random>.tmp", so "*.json" skips them.
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict) or "created" not in record or "run_id" not in record:
                    raise ValueError("not a run record (no run_id or created)")
            except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                print(f"vlbench: skipping unreadable record {path}: {e}", file=sys.stderr)
                continue
            out.append(record)
        return sorted(out, key=lambda r: (r["created"], r["run_id"]))

    def find(self, run_key: str) -> list[dict[str, Any]]:
        """Records of runs with this run key (the same spec), oldest first."""
        return [r for r in self.records() if r.get("run_key") == run_key]
