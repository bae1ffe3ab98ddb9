"""`vlbench experts`: build or extend an expert buffer (`vlbench show` is in vlbench/show.py).

cli.py wires it in with `add_distill_commands(subparsers)`.
"""
from __future__ import annotations

import argparse

from vlbench.core import VLBenchError, resolve_spec


def add_distill_commands(subparsers: argparse._SubParsersAction) -> None:
    experts = subparsers.add_parser("experts", help="train (or resume) the expert trajectories a trajectory-matching condenser uses")
    experts.add_argument("--condenser", help="tm (all trainable parameters) or tm-lora (default)")
    experts.add_argument("--dataset", help="data set name (default: synthscenes)")
    experts.add_argument("--data-root", help="directory holding the data set's images and annotations")
    experts.add_argument("--backbone", help="backbone name (default: tinyvit-minilm)")
    experts.add_argument("--num", type=int, help="number of experts (default: the condenser's num_experts)")
    experts.add_argument("--epochs", type=int, help="epochs per expert (default: the condenser's train_epochs)")
    experts.add_argument("--config", help="run YAML, or a sweep YAML (its first run), whose options to use (e.g. configs/flickr30k-tm-lora.yaml)")
    experts.add_argument("--device", help="auto (default), cpu or cuda[:N]")
    experts.add_argument("--noise-floor", action="store_true",
                         help="also replay expert 0's matched segments with another batch order and print their matching loss")
    experts.set_defaults(func=cmd_experts)


def _run_for(args: argparse.Namespace):
    from vlbench.cli import load_config
    from vlbench.runner import Run

    config = load_config(args.config)
    if isinstance(config.get("grid"), list):  # a sweep file: its first run
        config = config["grid"][0]
    config.pop("results", None)
    flags = {"condenser": args.condenser, "dataset": args.dataset, "backbone": args.backbone,
             "data_root": args.data_root, "device": args.device}
    spec = resolve_spec({"condenser": "tm-lora", **config}, flags)
    return Run(spec)


def cmd_experts(args: argparse.Namespace) -> int:
    import dataclasses


    from vlbench.api import CondenseContext, cache_dir
    from vlbench.tm import ExpertBuffer, noise_floor

    run = _run_for(args)
    condenser = run.condenser
    if not hasattr(condenser, "experts"):
        raise VLBenchError(f"condenser {run.spec.condenser!r} uses no expert trajectories (try tm or tm-lora)")
    overrides = {k: v for k, v in (("num_experts", args.num), ("train_epochs", args.epochs)) if v is not None}
    condenser.config = dataclasses.replace(condenser.config, **overrides)
    dataset = run.load_dataset()
    train_pairs, _ = run.load_pairs(dataset)
    ctx = CondenseContext(dataset=dataset, train=train_pairs, backbone=run.backbone, budget=1, seed=0, device=run.device,
                          protocol=run.spec.protocol, work_dir=cache_dir() / "work", progress=True)
    backbone, trajectories = condenser.experts(ctx)
    buffer = ExpertBuffer.locate(dataset.fingerprint, backbone.id, condenser.expert_spec(ctx))
    m = buffer.manifest()
    print(f"{len(trajectories)} experts x {condenser.config.train_epochs} epochs in {buffer.directory}: "
          f"{m['numel']} parameters, {m['bytes_per_trajectory'] / 2**20:.2f} MiB per trajectory")
    if args.noise_floor:
        c = condenser.config
        for start in range(c.max_start_epoch + 1):
            floor = noise_floor(trajectories[0], backbone.build(0, run.device), train_pairs, buffer.spec, start,
                                c.expert_epochs, run.device)
            print(f"noise floor, epoch {start} -> {start + c.expert_epochs}: "
                  + ", ".join(f"{side} {v:.3f}" for side, v in floor.items()))
    return 0
