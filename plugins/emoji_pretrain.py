"""Pretraining an embedded image encoder on the emoji domain: `pretrained: emoji`.

The pool is the emoji data set's held-out `pretrain` groups (plugins/emoji.py): no train, val or
test emoji, nor any skin-tone twin of one. The objective is image-caption contrastive learning
against the frozen text encoder's embeddings of the pool's own captions (a linear head maps the
image features into the text space; symmetric InfoNCE, temperature 0.07), since emoji have no
per-cell attributes to classify. One `pretrain_epochs` is as many steps as one epoch of the
synthscenes pretraining (10000 images at batch 128), so either checkpoint costs the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlbench.api import TextEncoder
from vlbench.data.images import load_images
from vlbench.train import clip_loss
from vlbench_plugins.emoji import pretrain_pool
from vlbench_plugins.tinyvit_pretrain import BATCH, fit

STEPS_PER_EPOCH = -(-10000 // BATCH)  # the synthscenes pretraining's
TEMPERATURE = 0.07


def pretrain_on_captions(features: nn.Module, dim: int, label: str, epochs: int, mean, std, *, image_size: int,
                         text_encoder: TextEncoder, seed: int = 0) -> dict[str, float]:
    """Train `features` (pixels -> (B, dim); the encoder inside it, in place) against the pool's captions;
    returns image->caption top-1 within the last batch of the pool (a sanity check, not a selection)."""
    paths, captions = pretrain_pool()
    pixels = load_images(paths, image_size, mean, std)
    text = F.normalize(text_encoder.encode([c for caps in captions for c in caps]), dim=-1)
    first = torch.tensor([0, *[len(caps) for caps in captions]]).cumsum(0)[:-1]  # each image's first caption
    counts = torch.tensor([len(caps) for caps in captions])
    torch.manual_seed(seed)
    head = nn.Linear(dim, text.shape[1])
    generator = torch.Generator().manual_seed(seed)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        caption = first[idx] + (torch.rand(len(idx), generator=generator) * counts[idx]).long()  # one of each image's
        return clip_loss(F.normalize(head(features(pixels[idx])), dim=-1), text[caption], TEMPERATURE)

    features.train()
    fit([*features.parameters(), *head.parameters()], batch_loss, len(pixels), epochs * STEPS_PER_EPOCH, generator,
        f"pretraining {label} on emoji")
    features.eval()
    with torch.no_grad():
        last = torch.arange(max(0, len(pixels) - BATCH), len(pixels))
        best = (F.normalize(head(features(pixels[last])), dim=-1) @ text.t()).argmax(-1)
        hit = (best >= first[last]) & (best < first[last] + counts[last])
    return {"image_to_caption_top1_last_batch": hit.float().mean().item()}
