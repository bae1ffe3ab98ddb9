"""`mmdm`: multimodal distribution matching, after Zhao & Bilen, "Dataset Condensation with Distribution
Matching" (WACV 2023), carried to image-text pairs as the MDM line of work (2026) does.

The synthetic pixels and text embeddings start as `random`'s pairs (`vlbench.random_pairs`: iteration 0
is the random coreset of the same seed). Each iteration samples a fresh model (`backbone.build` with a
new seed: on a pretrained backbone, its pretrained encoder under freshly drawn heads and adapters), embeds
a seeded batch of real pairs and the synthetic pairs, and moves the synthetic data so that three
moments of the two embedding distributions agree: the mean image embedding, the mean text embedding,
and the cross-moment of paired embeddings E[f_img(x) f_txt(t)^T], which only pairs that belong
together can match (the alignment term). No inner training loop and no expert trajectories: one
forward and backward pass per iteration, the cheapest family of distillers.

It is written against the public plugin API alone (the names in `vlbench.__all__`), as the worked
example of docs/plugins.md, "A method that makes new pixels". Its tunable options declare their
search spaces for the tuning ruleset (docs/protocol.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vlbench import (
    Choice, CondensedSet, CondenseContext, Condenser, LogUniform, VLBenchError, VLModel, derived_seed, option,
    pixel_range, random_pairs,
)
from vlbench.versions import CodeVersion


@dataclass
class MMDMConfig:
    iterations: int = option(200, "outer iterations; each samples a fresh model", search=Choice(100, 200, 400))
    batch_real: int = option(256, "real pairs drawn per iteration", search=Choice(128, 256, 512))
    lr_img: float = option(10.0, "SGD lr of the pixels", search=LogUniform(0.1, 100.0))
    lr_txt: float = option(1.0, "SGD lr of the text embeddings", search=LogUniform(0.01, 10.0))
    momentum: float = option(0.5, "SGD momentum (Zhao & Bilen: 0.5)")
    align_weight: float = option(1.0, "weight of the image-text cross-moment term against the two means",
                                 search=LogUniform(0.1, 10.0))

    def __post_init__(self):
        if self.iterations < 0 or self.batch_real < 1:
            raise VLBenchError("mmdm: iterations must be >= 0 and batch_real >= 1")
        if min(self.lr_img, self.lr_txt, self.align_weight) < 0 or not 0 <= self.momentum < 1:
            raise VLBenchError("mmdm: lr_img, lr_txt and align_weight must be >= 0 and momentum in [0, 1)")


def moments(model: VLModel, pixels: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mean image embedding, mean text embedding, mean of their outer products) of paired data."""
    image, caption = model.encode_image(pixels), model.encode_text(text)
    return image.mean(0), caption.mean(0), image.t() @ caption / len(image)


def matching_loss(model: VLModel, real: tuple[Tensor, Tensor], synthetic: tuple[Tensor, Tensor],
                  align_weight: float) -> Tensor:
    """Squared distances between the real and synthetic moments, the cross-moment weighted by `align_weight`."""
    with torch.no_grad():
        target = moments(model, *real)
    image, caption, cross = moments(model, *synthetic)
    return ((image - target[0]).square().sum() + (caption - target[1]).square().sum()
            + align_weight * (cross - target[2]).square().sum())


class MultimodalDistributionMatching(Condenser):
    name = "mmdm"
    Config = MMDMConfig
    # vlbench's own plugins share vlbench's version, so each names the code behind its sets (a third
    # party's distribution version does this job for its plugins).
    code_version = CodeVersion("condenser:mmdm", 1, ("vlbench_plugins.mmdm", "vlbench.coreset", "vlbench.pixels"))

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        c = self.config
        picked = random_pairs(ctx)  # checks the budget; iteration 0 is `random`'s set
        images, text = ctx.train.select(picked)
        pixels = images.clone().to(ctx.device).requires_grad_(True)
        text = text.clone().to(ctx.device).requires_grad_(True)
        low, high = pixel_range(ctx.backbone.normalization, ctx.device)
        text_norm = text.detach().norm(dim=1, keepdim=True)
        optimizer = torch.optim.SGD([{"params": [pixels], "lr": c.lr_img}, {"params": [text], "lr": c.lr_txt}],
                                    momentum=c.momentum)
        losses = []
        with ctx.progress(c.iterations, "distribution matching") as bar:  # the run's line shows it
            for iteration in range(c.iterations):
                model = ctx.backbone.build(derived_seed("mmdm-model", ctx.seed, iteration), ctx.device)
                model.requires_grad_(False).eval()  # only the synthetic data learns; eval: dropout would draw globally
                loss = matching_loss(model, self.real_batch(ctx, iteration), (pixels, text), c.align_weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():  # stay images, and keep each caption embedding's norm
                    pixels.copy_(torch.maximum(torch.minimum(pixels, high), low))
                    text.mul_(text_norm / text.norm(dim=1, keepdim=True).clamp_min(1e-12))
                losses.append(loss.item())
                bar.update(note=f"loss {losses[-1]:.4f}")
        window = max(1, min(10, len(losses) // 4))
        return CondensedSet(
            images=pixels.detach().cpu(), text_features=text.detach().cpu(),
            meta={"init_indices": picked.tolist(), **({"loss_first": sum(losses[:window]) / window,
                                                       "loss_last": sum(losses[-window:]) / window} if losses else {})})

    def real_batch(self, ctx: CondenseContext, iteration: int) -> tuple[Tensor, Tensor]:
        """`batch_real` training pairs drawn for this iteration (seeded: a rerun draws the same)."""
        generator = torch.Generator().manual_seed(derived_seed("mmdm-real", ctx.seed, iteration))
        picked = torch.randperm(len(ctx.train), generator=generator)[: self.config.batch_real]
        images, text = ctx.train.select(picked)
        return images.to(ctx.device), text.to(ctx.device)
