"""Why did an evaluation model of a record end where it did? Retrain that one model on the record's condensed
set (from the cache, else condensed again) and print its training loss as it goes: the CLIP loss of the model in
eval mode on the set's first batch of pairs, every `--every` steps (no augmentation, no dropout, so the trace
does not change what the model trains on). At the protocol's lr the final recall is the record's own number for
that model; `--lr` retrains it at others too.

    OMP_NUM_THREADS=1 python scripts/eval_trace.py 329f38fc-20261207T162025Z-e7ca1d57 --model 3 --lr 0.03 0.01
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from vlbench.board.reproduce import find_record, spec_of
from vlbench.condensing import condensed_set
from vlbench.evaluation import training_data
from vlbench.runner import Run
from vlbench.api import Pairs
from vlbench.train import TrainData, clip_loss, evaluate, train


def trace(run: Run, data: TrainData, eval_pairs: Pairs, model_index: int, lr: float, every: int) -> tuple[list[float], float]:
    """The probe loss every `every` steps and the final mean recall of evaluation model `model_index` (1-based)."""
    protocol = dataclasses.replace(run.condenser.evaluation_protocol(len(data), run.spec.protocol), lr=lr)
    seed = run.eval_seeds()[model_index - 1]
    model = run.eval_backbone.build(seed, run.device)
    probe = torch.arange(min(protocol.batch_size, len(data)))
    losses, step = [], 0

    @torch.no_grad()
    def probe_loss() -> float:
        model.eval()
        image_emb, text_emb = model(data.images[data.pair_image[probe]].to(run.device), data.text_features[probe].to(run.device))
        model.train()
        return clip_loss(image_emb.float(), text_emb.float(), model.temperature).item()

    def on_step() -> None:
        nonlocal step
        step += 1
        if step % every == 0:
            losses.append(probe_loss())

    losses.append(probe_loss())
    train(model, data, protocol, seed, device=run.device, augment=run.augment, on_step=on_step)
    return losses, evaluate(model, eval_pairs, run.device)["mean"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", help="a run id under results/ (or a record file)")
    parser.add_argument("--model", type=int, required=True, help="which evaluation model (1-based, as records count)")
    parser.add_argument("--lr", type=float, nargs="+", help="lrs to train at (default: the protocol's)")
    parser.add_argument("--every", type=int, default=25, help="steps between loss probes (default 25)")
    parser.add_argument("--data-root", help="the data set's directory, where it is not the embedded default")
    args = parser.parse_args(argv)
    record, _ = find_record(args.record)
    run = Run(spec_of(record, args.data_root))
    if run.reference or record["condensed"].get("learned_lrs") or record["condensed"].get("soft_targets"):
        raise SystemExit("eval_trace traces condensed sets trained with the plain CLIP loss at one lr "
                         "(not the full-data reference, learned lrs or soft targets)")
    _, train_pairs, eval_pairs = run.load_data()
    condensed, _, _ = condensed_set(run, train_pairs)
    data = training_data(run, condensed)
    if data.live_text is not None:
        raise SystemExit("eval_trace probes stored text features; this set encodes its text live")
    recorded = record["metrics"]["per_seed"][args.model - 1]["mean"]
    recorded_lr = run.condenser.evaluation_protocol(len(data), run.spec.protocol).lr  # what the record trained at
    for lr in args.lr or [recorded_lr]:
        losses, mean = trace(run, data, eval_pairs, args.model, lr, args.every)
        same = " (the record's, exactly)" if lr == recorded_lr and mean == recorded else ""
        print(f"lr {lr:g}: probe loss every {args.every} steps " + " ".join(f"{x:.2f}" for x in losses))
        print(f"lr {lr:g}: mean recall {mean:.2f}{same}; recorded at lr {recorded_lr:g}: {recorded:.2f}")


if __name__ == "__main__":
    main()
