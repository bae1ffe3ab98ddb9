"""The golden records: small runs whose per-seed metrics any machine must reproduce exactly.

    python scripts/golden_record.py [NAME ...]  # (re)write results/golden/records/ (all, or the named ones)
    python scripts/golden_record.py --check     # rerun each and compare (tests/test_golden.py does this)

On a small synthscenes tree that the generator writes from seed 0 (200 train / 20 val / 100 test
images), with 1 evaluation model, default backbone and protocol:
- `random`: 40 pairs. The whole path a committed number takes: generation, PNG decoding, the shipped
  ViT checkpoint, MiniLM text features, condensing, the trainer and the metrics.
- `tm-lora`: 10 pairs distilled in 3 iterations of 3 inner steps against 1 expert of 2 epochs: the
  expert buffer and the distiller, each hashed in the record (`artifacts`).
Rerun it whenever the protocol, the default backbone or a builder's output changes (and commit the
new records, from a clean checkout: a committed results directory refuses anything else).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from vlbench.core import RunSpec
from vlbench.data.synthscenes import generate
from vlbench.board.records import ResultsStore, RunRecord
from vlbench.runner import run

GOLDEN = Path(__file__).resolve().parent.parent / "results" / "golden"
SIZES = {"train": 200, "val": 20, "test": 100, "pretrain": 0}
SPECS = {
    "random": RunSpec("random", 40, evals=1),
    "tm-lora": RunSpec("tm-lora", 10, evals=1, condenser_options={
        "num_experts": 1, "train_epochs": 2, "iterations": 3, "syn_steps": 3, "batch_syn": 10}),
}


def data_tree(work: Path) -> Path:
    """Generate the golden runs' data tree under `work`; returns its root."""
    generate(work / "data", 0, **SIZES)
    return work / "data"


def committed() -> dict[str, RunRecord]:
    """{condenser: its committed golden record}."""
    return {record.condenser: record for record in ResultsStore(GOLDEN).records()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"golden records to (re)write: {', '.join(SPECS)}")
    parser.add_argument("--check", action="store_true", help="rerun each and compare with its committed record")
    args = parser.parse_args()
    if set(args.names) - set(SPECS):
        parser.error(f"unknown golden record(s) {', '.join(sorted(set(args.names) - set(SPECS)))} (known: {', '.join(SPECS)})")
    with tempfile.TemporaryDirectory() as tmp:
        root = str(data_tree(Path(tmp)))
        if args.check:
            from vlbench.board.reproduce import reproduce

            comparisons = [reproduce(record, data_root=root, progress=False) for record in committed().values()]
            print("\n".join(c.summary() for c in comparisons))
            return 0 if all(c.matches for c in comparisons) else 1
        old = committed()
        for name in args.names or SPECS:
            if name in old:
                (GOLDEN / "records" / f"{old[name].run_id}.json").unlink()
            spec = SPECS[name]
            record = run(RunSpec.from_dict({**spec.to_dict(), "data_root": root}), GOLDEN, progress=False)
            print(f"wrote {GOLDEN}/records/{record.run_id}.json: mean recall {record.mean_recall[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
