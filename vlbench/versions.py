"""Versions of the code that builds each cached artifact, so that its cache key changes with that code.

A cached artifact (text features, a reference model, an expert buffer, a forgetting history, a
condensed set) is reused whenever its key matches; if the code that builds it changes what it
builds, the key must change too, or a stale artifact is silently reused. Each builder declares a
`CodeVersion`: a number that is part of the artifact's key, and the modules whose source makes the
artifact. Version 1 adds nothing to a key (the keys artifacts had before versions existed).

tests/test_code_versions.py compares each builder's source hash with tests/code_versions.json: a
change to a builder's source fails it until the version is bumped (the artifacts change) or the
file is rewritten because they do not (`python scripts/code_versions.py`). Either way it is a
decision someone made, not an accident. Hashing the source into keys instead would invalidate
every cache on any edit, a comment included.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

#: Every declared builder, by name (filled as the modules that declare them are imported).
BUILDERS: dict[str, CodeVersion] = {}


@dataclass(frozen=True)
class CodeVersion:
    name: str
    number: int
    sources: tuple[str, ...]  # modules whose source determines what is built

    def __post_init__(self):
        BUILDERS[self.name] = self

    def key(self) -> list[int]:
        """What the version adds to a key: nothing at version 1, so keys from before versions stay."""
        return [] if self.number == 1 else [self.number]

    def source_sha256(self) -> str:
        digest = hashlib.sha256()
        for module in self.sources:
            spec = importlib.util.find_spec(module)
            digest.update(module.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
        return digest.hexdigest()
