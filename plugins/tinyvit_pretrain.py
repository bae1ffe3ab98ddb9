"""Pretraining of the embedded image encoders: per-cell attribute classification on synthscenes.

The `pretrain` split of the generator is disjoint from train/val/test, so no benchmark image is
seen. The encoder learns colour, shape and size per grid cell from its patch tokens; retrieval
training later has to turn that into a global embedding that composes them, which is what makes
the benchmark need fine-tuning (here: LoRA) at all.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlbench.data.images import load_images
from vlbench.data.synthscenes import SynthScenes, load_pretrain_labels
from vlbench.progress import bar

BATCH = 128


def cell_features(vit: nn.Module, pixels: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """Patch tokens averaged per grid cell: (B, grid*grid, width)."""
    tokens = vit.forward_features(pixels)[:, vit.num_prefix_tokens :]
    side = int(tokens.shape[1] ** 0.5)
    maps = tokens.transpose(1, 2).reshape(len(tokens), -1, side, side)
    return F.adaptive_avg_pool2d(maps, grid).flatten(2).transpose(1, 2)


def pretrain(encoder: nn.Module, label: str, epochs: int, mean, std, *, image_size: int, width: int,
             cells: Callable[[torch.Tensor], torch.Tensor], seed: int = 0) -> dict[str, float]:
    """Train `encoder` (in place) so that `cells(pixels)`, (B, 9, width), classify each cell; returns the
    per-attribute accuracy on the last 1000 pretraining images (a sanity check, not a selection)."""
    root = SynthScenes().load(None).root
    paths, labels, class_names = load_pretrain_labels(root)
    pixels = load_images(paths, image_size, mean, std)
    sizes = [len(class_names[k]) + 1 for k in ("colour", "shape", "size")]  # +1: empty cell
    targets = labels + 1  # -1 (empty) becomes class 0
    torch.manual_seed(seed)
    heads = nn.ModuleList(nn.Linear(width, n) for n in sizes)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        per_cell = cells(pixels[idx])
        return sum(F.cross_entropy(h(per_cell).flatten(0, 1), targets[idx, :, k].flatten()) for k, h in enumerate(heads))

    encoder.train()
    fit([*encoder.parameters(), *heads.parameters()], batch_loss, len(pixels), epochs * -(-len(pixels) // BATCH),
        torch.Generator().manual_seed(seed), f"pretraining {label}")
    encoder.eval()
    with torch.no_grad():
        held_out = slice(len(pixels) - 1000, None)
        per_cell = cells(pixels[held_out])
        return {
            k: (h(per_cell).argmax(-1) == targets[held_out, :, i]).float().mean().item()
            for i, (k, h) in enumerate(zip(("colour", "shape", "size"), heads))
        }


def fit(params: list[nn.Parameter], batch_loss: Callable[[torch.Tensor], torch.Tensor], items: int, steps: int,
        generator: torch.Generator, desc: str) -> None:
    """`steps` AdamW steps (lr 1e-3, weight decay 0.05) on `batch_loss(indices)`: batches of BATCH of the `items`,
    in a fresh order drawn from `generator` for each pass (the last pass cut short where the steps run out)."""
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    done = bar(steps, desc, "step")
    step = 0
    while step < steps:
        for idx in torch.randperm(items, generator=generator).split(BATCH)[: steps - step]:
            loss = batch_loss(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            done.update(note=f"loss {loss.item():.3f}")
    done.close()
