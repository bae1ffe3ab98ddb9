"""What shared stages cost: cached work that many runs reuse is charged to every run that uses it.

A stage's builder (reference model, expert buffer, forgetting history) times the build and stamps
the artifact with a `<file>.cost.json` beside it: wall time, when, and the run key that built it.
A run that reuses the artifact reads the stamp, so its record carries the full price whether the
work was done now or earlier. The runner collects the entries of one condense job with `collecting`.
"""
from __future__ import annotations

import contextlib
import json
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from vlbench.provenance import portable_path
from vlbench.storage import atomic_write_json

_ledger: ContextVar[list[dict[str, Any]] | None] = ContextVar("vlbench_shared_stages", default=None)
_run_key: ContextVar[str | None] = ContextVar("vlbench_run_key", default=None)


def stamp_path(artifact: Path) -> Path:
    return Path(artifact).with_name(Path(artifact).name + ".cost.json")


def _note(entry: dict[str, Any]) -> None:
    ledger = _ledger.get()
    if ledger is not None and all(e["artifact"] != entry["artifact"] for e in ledger):
        ledger.append(entry)


@contextlib.contextmanager
def building(stage: str, artifact: Path) -> Iterator[None]:
    """Wrap the build of `artifact`: on success, stamp it with its cost and charge the current run."""
    start = time.perf_counter()
    yield
    stamp = {"stage": stage, "wall_s": round(time.perf_counter() - start, 3), "built_by": _run_key.get(),
             "built_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    atomic_write_json(stamp_path(artifact), stamp)
    _note({**stamp, "built_now": True, "artifact": portable_path(artifact)})


def reusing(stage: str, artifact: Path) -> None:
    """Charge the current run the recorded cost of an artifact built earlier (unknown if unstamped)."""
    try:
        stamp = json.loads(stamp_path(artifact).read_text())
    except (OSError, ValueError):
        stamp = {"stage": stage, "wall_s": None, "built_by": None, "built_at": None}
    _note({**stamp, "built_now": False, "artifact": portable_path(artifact)})


def content(artifact: Path, sha256: str) -> None:
    """Note the content hash of what the current run used from `artifact` (records compare runs by it)."""
    where = portable_path(artifact)
    for entry in _ledger.get() or []:
        if entry["artifact"] == where:
            entry["sha256"] = sha256


@contextlib.contextmanager
def collecting(run_key: str) -> Iterator[list[dict[str, Any]]]:
    """Collect the shared stages used inside the block (each artifact once)."""
    entries: list[dict[str, Any]] = []
    tokens = _ledger.set(entries), _run_key.set(run_key)
    try:
        yield entries
    finally:
        _ledger.reset(tokens[0])
        _run_key.reset(tokens[1])
