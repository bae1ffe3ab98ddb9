"""Score the coresets' full-data reference models on the validation split, one per condensing seed.

    python scripts/reference_models.py [--seeds 0 1 2] [--dataset synthscenes] [--backbone tinyvit-minilm]

Each is the model `herding` and `kcenter` select with (`ctx.reference_model(seed)`): found in the cache,
or trained there as a run would. A reference model near chance (mean recall about 1) selects with noise;
vlbench refuses one at training time (vlbench.coreset.check_reference), and this shows how far above it each is.
"""
from __future__ import annotations

import argparse

from vlbench.condensing import reference_model
from vlbench.core import RunSpec
from vlbench.runner import Run
from vlbench.train import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", default="synthscenes")
    parser.add_argument("--backbone", default="tinyvit-minilm")
    args = parser.parse_args()
    print("| seed | " + " | ".join(("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "mean")) + " |")
    print("|---" * 8 + "|")
    for seed in args.seeds:
        run = Run(RunSpec(condenser="herding", budget=1, dataset=args.dataset, backbone=args.backbone, seed=seed,
                          split="val"), progress=False)
        _, train_pairs, val_pairs = run.load_data()
        m = evaluate(reference_model(run, train_pairs, seed), val_pairs, run.device)
        print(f"| {seed} | " + " | ".join(f"{m[k]:.1f}" for k in ("tr@1", "tr@5", "tr@10", "ir@1", "ir@5", "ir@10", "mean"))
              + " |", flush=True)


if __name__ == "__main__":
    main()
