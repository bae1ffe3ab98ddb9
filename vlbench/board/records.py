"""The results store: one JSON record per run under `<directory>/records/`, written atomically.

One file per run means concurrent runs never write the same file, and the atomic write means a
killed run leaves its record complete or absent, never half-written. A record reads back as a
`RunRecord`: the stored JSON as a read-only mapping (as the leaderboard reads it) with typed
accessors for what the CLI, sweeps and progress estimates use.
"""
from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime, timezone
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlbench.core import stable_hash
from vlbench.storage import atomic_write_json

log = logging.getLogger(__name__)


def run_identity(spec: Mapping[str, Any], condenser_config: Mapping[str, Any]) -> str:
    """How the results store recognises a run: its run key as if no condenser option were spelled out, the
    condenser's effective config saying what they are. An option spelled out at a value that is (or became)
    its default is then the same run as leaving it out. For a run that sets no option it is the run key."""
    return stable_hash({**spec, "data_root": None, "condenser_options": {}, "condenser_config": condenser_config})


def run_shape(condenser: str, condenser_config: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple:
    """What makes runs take about as long: the condenser and its effective config (options after defaults,
    tuned choices and overrides), budget, backbone, data set and number of evaluation models."""
    return (condenser, stable_hash(condenser_config), *(spec.get(k) for k in ("budget", "backbone", "dataset", "evals")))


def new_run_id(run_key: str) -> str:
    """A unique, sortable run id: run-key prefix, UTC time, random suffix (processes never collide)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{run_key[:8]}-{stamp}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class SharedCost:
    """A shared stage a run used (built now, or reused and charged its recorded cost)."""

    stage: str
    wall_s: float | None  # None: built before costs were stamped
    built_now: bool
    built_by: str | None  # the run key it was built (or prepared) for


def is_reference(record: Mapping[str, Any]) -> bool:
    """Whether a record is the full-data reference: its condenser's flag (`Condenser.trains_on_full_data`).
    Schema-1 records predate the flag; `full` was the one reference then."""
    condenser = record["condenser"]
    return condenser["reference"] if "reference" in condenser else condenser["name"] == "full"


class RunRecord(Mapping):
    """One run's record: the JSON as stored (`record["metrics"]`, ...) and typed views of it."""

    def __init__(self, data: dict[str, Any]):
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def run_id(self) -> str:
        return self._data["run_id"]

    @property
    def run_key(self) -> str:
        return self._data["run_key"]

    @property
    def identity(self) -> str | None:
        """`run_identity` of the recorded spec and config; schema-1 records (whose specs lack fields that
        their keys hashed) are known by their run key alone."""
        if self._data.get("schema", 1) < 2:
            return self._data.get("run_key")  # very old records may have none
        return run_identity(self._data["spec"], self._data["condenser"]["config"])

    @property
    def condenser(self) -> str:
        return self._data["condenser"]["name"]

    @property
    def budget(self) -> int:
        return self._data["budget"]

    @property
    def reference(self) -> bool:
        return is_reference(self._data)

    @property
    def shape(self) -> tuple:
        """`run_shape` of the recorded run."""
        return run_shape(self.condenser, self._data["condenser"].get("config", {}), self._data["spec"])

    @property
    def mean_recall(self) -> tuple[float, float]:
        """Mean of the six recalls over the evaluation models, and its std."""
        metrics = self._data["metrics"]
        return metrics["mean"]["mean"], metrics["std"]["mean"]

    @property
    def stage_seconds(self) -> dict[str, float]:
        return {name: info["wall_s"] for name, info in self._data["stages"].items()}

    @property
    def condensed_reused(self) -> bool:
        return bool(self._data["stages"].get("condense", {}).get("cached"))

    @property
    def shared_costs(self) -> list[SharedCost]:
        used = (self._data["condensed"].get("cost") or {}).get("shared", [])
        return [SharedCost(u["stage"], u["wall_s"], u["built_now"], u["built_by"]) for u in used]

    @property
    def condensed_path(self) -> str | None:
        return self._data["condensed"].get("path")


def read_record(path: Path, needs: tuple[str, ...]) -> RunRecord:
    """The record in `path`; a file that cannot be read, or lacks a key of `needs`, is one line."""
    from vlbench.core import VLBenchError

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise VLBenchError(f"cannot read run record {path}: {e}") from e
    if not isinstance(record, dict) or not all(key in record for key in ("run_id", *needs)):
        raise VLBenchError(f"{path} is not a run record" + (f" with {' and '.join(needs)}" if needs else ""))
    return RunRecord(record)


class ResultsStore:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.records_dir = self.directory / "records"

    def add(self, record: Mapping[str, Any]) -> Path:
        """Write `record` to `records/<run_id>.json`; an existing record is never overwritten."""
        run_id = record["run_id"]
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
            raise ValueError(f"run_id {run_id!r} is not a plain file name")
        path = self.records_dir / f"{run_id}.json"
        if path.exists():
            raise FileExistsError(f"a record for run {run_id} already exists: {path}")
        atomic_write_json(path, dict(record))
        return path

    def records(self) -> list[RunRecord]:
        """All readable records, oldest first; unreadable files are skipped with a warning."""
        out = []
        # Temp files of in-flight writes are named ".<name>.<random>.tmp", so "*.json" skips them.
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict) or "created" not in record or "run_id" not in record:
                    raise ValueError("not a run record (no run_id or created)")
            except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                log.warning(f"skipping unreadable record {path}: {e}")
                continue
            out.append(RunRecord(record))
        return sorted(out, key=lambda r: (r["created"], r.run_id))

    def find(self, identity: str) -> list[RunRecord]:
        """Records of the run with this identity (`Run.identity`: the same spec and effective config), oldest first."""
        return [r for r in self.records() if r.identity == identity]
