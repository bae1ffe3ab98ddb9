"""`vlbench experts`: build or extend an expert buffer up front; the tm plugin's own command.

builtin.py adds it through the `register_commands` hook. This module imports nothing heavy: the
CLI builds its parser (and so calls this) on every start, `vlbench --help` included.
"""
from __future__ import annotations

import argparse


def add_experts_command(subparsers: argparse._SubParsersAction) -> None:
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
    """The run whose expert buffer to build: the config's options, the flags over them."""
    from vlbench.core import VLBenchError
    from vlbench.runner import run_from_config

    sizes = {k: v for k, v in (("num_experts", args.num), ("train_epochs", args.epochs)) if v is not None}
    flags = {"condenser": args.condenser, "dataset": args.dataset, "backbone": args.backbone,
             "data_root": args.data_root, "device": args.device}
    # the buffer does not depend on the budget: any valid one resolves the run when the config names none
    run = run_from_config(args.config, {"condenser": "tm-lora", "budget": 1}, flags, sizes)
    if "expert_buffer" not in run.condenser_cls.requires:
        raise VLBenchError(f"condenser {run.spec.condenser!r} uses no expert trajectories (try tm or tm-lora)")
    return run


def cmd_experts(args: argparse.Namespace) -> int:
    from vlbench.condensing import stage_context
    from vlbench.tm import ExpertBuffer, ExpertBufferStage, noise_floor

    run = _run_for(args)
    ctx = stage_context(run)
    condenser, c = run.condenser, run.condenser.config
    backbone, trajectories = ExpertBufferStage().build(condenser, ctx)
    buffer = ExpertBuffer.locate(ctx.dataset.fingerprint, backbone.id, condenser.expert_spec(ctx))
    m = buffer.manifest()
    print(f"{len(trajectories)} experts x {c.train_epochs} epochs in {buffer.directory}: "
          f"{m['numel']} parameters, {m['bytes_per_trajectory'] / 2**20:.2f} MiB per trajectory")
    if args.noise_floor:
        for start in range(c.max_start_epoch + 1):
            floor = noise_floor(trajectories[0], backbone.build(0, run.device), ctx.train, buffer.spec, start,
                                c.expert_epochs, run.device, backbone.text_encoder)
            print(f"noise floor, epoch {start} -> {start + c.expert_epochs}: "
                  + ", ".join(f"{side} {v:.3f}" for side, v in floor.items()))
    return 0
