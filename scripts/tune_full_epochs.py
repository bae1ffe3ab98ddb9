"""Choose the `full` reference's epoch budget on the validation split (docs/protocol.md).

    OMP_NUM_THREADS=1 python scripts/tune_full_epochs.py [--epochs 10] [--seeds 0 1] [--lr 0.01]

Trains models on every training pair with the protocol's optimiser, scores val recall after each
epoch, and picks the first epoch whose mean (over seeds) is within `--tolerance` points of the best:
the plateau. Writes the curves and the choice to results/tuning/full-epochs.json.
"""
from __future__ import annotations

import argparse
import statistics
from datetime import datetime, timezone

from vlbench.core import RunSpec, TrainProtocol
from vlbench.provenance import source_commit
from vlbench.runner import Run
from vlbench.storage import atomic_write_json
from vlbench.train import TrainData, evaluate, train


def curve(run: Run, data: TrainData, val, seed: int, epochs: int) -> list[float]:
    recalls: list[float] = []
    steps_per_epoch = -(-len(data) // min(run.spec.protocol.batch_size, len(data)))
    train(run.backbone.build(seed, run.device), data, run.spec.protocol, seed, steps=epochs * steps_per_epoch,
          device=run.device, augment=run.augment,
          on_epoch_end=lambda epoch, model: recalls.append(round(evaluate(model, val, run.device)["mean"], 3)))
    print(f"seed {seed}: val mean recall per epoch {recalls}")
    return recalls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tolerance", type=float, default=0.5, help="points below the best that still count as the plateau")
    parser.add_argument("--lr", type=float, default=TrainProtocol.lr, help="SGD lr (default: the protocol's)")
    parser.add_argument("--output", default="results/tuning/full-epochs.json")
    args = parser.parse_args()
    run = Run(RunSpec("full", 0, split="val", protocol=TrainProtocol(lr=args.lr)))
    dataset, train_pairs, val_pairs = run.load_data()
    curves = {seed: curve(run, TrainData.from_pairs(train_pairs), val_pairs, seed, args.epochs) for seed in args.seeds}
    means = [statistics.fmean(c[e] for c in curves.values()) for e in range(args.epochs)]
    chosen = next(e + 1 for e, m in enumerate(means) if m >= max(means) - args.tolerance)
    atomic_write_json(args.output, {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "split": "val",
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint}, "backbone": run.backbone.id,
        "protocol": {"id": run.spec.protocol.id}, "lr": args.lr, "curves": curves, "mean_per_epoch": [round(m, 3) for m in means],
        "tolerance": args.tolerance, "chosen_epochs": chosen, "source": source_commit(),
    })
    print(f"chosen: {chosen} epochs (mean val recall {means[chosen - 1]:.2f}; best {max(means):.2f})")


if __name__ == "__main__":
    main()
