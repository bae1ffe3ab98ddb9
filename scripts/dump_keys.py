"""Print the keys of every run the repository names: each run of the sweeps in configs/ and each committed
record under results/, with its run key, identity, condense key and shared-stage keys.

    python scripts/dump_keys.py > /tmp/keys-before.txt     # before a refactoring
    python scripts/dump_keys.py | diff /tmp/keys-before.txt -   # after it: no output means no key moved

A refactoring that must not change a number keeps this output identical. Keys that need a data set this
machine lacks (Flickr30K, COCO) print the one-line error instead, the same one before and after.
"""
from __future__ import annotations

import sys
from pathlib import Path

from vlbench.board.records import read_record
from vlbench.board.reproduce import spec_of
from vlbench.config import expand, read_sweep
from vlbench.core import VLBenchError, stable_hash
from vlbench.runner import Run

ROOT = Path(__file__).resolve().parent.parent
_datasets: dict[str, object] = {}  # each data set's annotations are read once


def keys(spec) -> str:
    """The run's keys on one line; what cannot be computed here is named by its error."""
    try:
        where = stable_hash([spec.dataset, spec.data_root, spec.dataset_options])
        run = Run(spec, dataset=_datasets.get(where))
        line = f"run {run.run_key} identity {run.identity}"
        _datasets[where] = run.dataset
        stages = " ".join(f"{name} {key}" for name, key in run.stage_keys.items())
        return f"{line} condense {run.condense_key}" + (f" stages {stages}" if stages else "")
    except VLBenchError as e:
        return (f"{line} " if "line" in locals() else "") + f"error: {str(e).splitlines()[0]}"


def main() -> int:
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        try:
            grid = read_sweep(path)["grid"]
        except VLBenchError:  # a run config, not a sweep: `vlbench run --config` reads it
            continue
        for i, spec in enumerate(expand(grid)):
            print(f"{path.relative_to(ROOT)}#{i}: {keys(spec)}")
    for path in sorted(ROOT.glob("results/**/records/*.json")):
        print(f"{path.relative_to(ROOT)}: {keys(spec_of(read_record(path, ('spec', 'condenser'))))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
