"""The artifact cache: one way to load-or-build anything vlbench derives and keeps.

`cached(kind, name, build, load, save)` finds `$VLBENCH_CACHE/<kind>/<name>`, or builds it: under
an exclusive lock beside the file (concurrent jobs wait for one build, then read it), saved
through a temporary file renamed into place (a reader sees nothing or the whole file), and, for a
shared stage, stamped with its cost so that every run that reuses it is charged (vlbench/costs.py).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, TypeVar

from vlbench import costs
from vlbench.core import cache_dir
from vlbench.provenance import file_sha256
from vlbench.storage import atomic_path, file_lock

T = TypeVar("T")


def artifact_path(kind: str, name: str) -> Path:
    return cache_dir() / kind / name


def cached(kind: str, name: str, build: Callable[[], T], load: Callable[[Path], T], save: Callable[[T, Path], None],
           stage: str | None = None) -> T:
    """The artifact `kind`/`name`: loaded if it is there, else built, saved and returned as built.

    `save(value, path)` writes to the path it is given (a temporary one); `stage` names the shared
    stage the artifact is, for its cost stamp and the current run's ledger.
    """
    path = artifact_path(kind, name)
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            value = load(path)
            if stage:
                costs.reusing(stage, path)
        else:
            with costs.building(stage, path) if stage else contextlib.nullcontext():
                value = build()
                with atomic_path(path) as tmp:
                    save(value, tmp)
        if stage:
            costs.content(path, file_sha256(path))
        return value

