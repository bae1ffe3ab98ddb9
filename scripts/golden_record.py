"""The golden record: one small run whose per-seed metrics any machine must reproduce exactly.

    python scripts/golden_record.py            # (re)write results/golden/records/<run>.json
    python scripts/golden_record.py --check    # rerun it and compare (tests/test_golden.py does this)

A `random` run (40 pairs, 1 evaluation model, default backbone and protocol) on a small
synthscenes tree that the generator writes from seed 0 (200 train / 20 val / 100 test images).
It exercises the whole path a committed number takes: generation, PNG decoding, the shipped ViT
checkpoint, MiniLM text features, condensing, the trainer and the metrics. Rerun it whenever
the protocol or the default backbone changes (and commit the new record).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from vlbench.core import RunSpec
from vlbench.data.synthscenes import generate
from vlbench.results import ResultsStore
from vlbench.runner import run

GOLDEN = Path(__file__).resolve().parent.parent / "results" / "golden"
SIZES = {"train": 200, "val": 20, "test": 100, "pretrain": 0}


def golden_run(work: Path, results: Path) -> dict:
    """Generate the tree under `work` and run the golden spec into `results`; returns the record."""
    generate(work / "data", 0, **SIZES)
    spec = RunSpec("random", 40, data_root=str(work / "data"), evals=1)
    return run(spec, results, progress=False)


def committed() -> dict:
    (record,) = ResultsStore(GOLDEN).records()
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rerun and compare with the committed record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.check:
            for old in (GOLDEN / "records").glob("*.json"):
                old.unlink()
            record = golden_run(Path(tmp), GOLDEN)
            print(f"wrote {GOLDEN}/records/{record['run_id']}.json: {json.dumps(record['metrics']['per_seed'])}")
            return 0
        fresh = golden_run(Path(tmp), Path(tmp) / "results")
    same = fresh["metrics"]["per_seed"] == committed()["metrics"]["per_seed"]
    print("reproduced exactly" if same else f"DIFFERS: {fresh['metrics']['per_seed']} vs {committed()['metrics']['per_seed']}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
