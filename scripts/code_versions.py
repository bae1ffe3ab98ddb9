"""Record each cached-artifact builder's version and source hash in tests/code_versions.json.

    python scripts/code_versions.py     # after changing a builder (bump its version first if its output changed)

tests/test_code_versions.py fails until the file matches the code; vlbench/versions.py says why.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from vlbench.plugins import BUILTIN, registry
from vlbench.versions import BUILDERS

FILE = Path(__file__).resolve().parent.parent / "tests" / "code_versions.json"
#: Harness modules that declare builders (condensers and stages declare theirs in their own modules).
MODULES = ("vlbench.data.pairs", "vlbench.stages", "vlbench.tm.experts")


def current() -> dict[str, dict]:
    """{builder: {version, source_sha256}} of every first-party builder, as the code stands."""
    for module in MODULES:
        importlib.import_module(module)
    reg = registry()
    for kind in ("condenser", "stage"):
        for name in reg.names(kind):
            if reg.origin(kind, name).distribution == BUILTIN:
                reg.get(kind, name)  # imports the module that declares its version
    return {name: {"version": b.number, "source_sha256": b.source_sha256()} for name, b in sorted(BUILDERS.items())}


def main() -> int:
    FILE.write_text(json.dumps(current(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
