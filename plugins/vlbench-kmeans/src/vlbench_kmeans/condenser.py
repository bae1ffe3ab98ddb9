"""The `kmeans` condenser: k-means prototypes of the joint embeddings.

Every training pair is embedded by a reference model trained on the full training set (the
runner provides and caches it): the image and the caption embedding, concatenated. k-means with
k = budget clusters the pairs, and each centroid is replaced by the nearest real pair not taken
yet, so the result is a coreset of `budget` distinct training pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vlbench.api import CondensedSet, CondenseContext, Condenser, VLBenchError, VLModel, option


@dataclass
class KMeansConfig:
    iterations: int = option(25, "Lloyd iterations after k-means++ seeding")


class KMeansPrototypes(Condenser):
    name = "kmeans"
    Config = KMeansConfig
    requires = frozenset({"reference_model"})  # a sweep trains it once for all the runs that share it

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        ctx.check_budget()  # one line naming the budget and the training pairs
        if ctx.reference_model is None:
            raise VLBenchError("kmeans embeds pairs with the context's reference model, and this context has none")
        # Outside no_grad: on its first call the reference model is trained.
        model = ctx.reference_model(ctx.seed).to(ctx.device).eval()
        points = joint_embeddings(model, ctx)
        generator = torch.Generator().manual_seed(ctx.seed)
        centroids = kmeans(points, ctx.budget, self.config.iterations, generator)
        return CondensedSet.from_indices(ctx.train, nearest_distinct(points, centroids), condenser=self.name)


@torch.no_grad()
def joint_embeddings(model: VLModel, ctx: CondenseContext, batch_size: int = 512) -> Tensor:
    """(pairs, 2 * joint dim) on the CPU: each pair's image and caption embedding side by side."""
    images = torch.cat([model.encode_image(b.to(ctx.device)).cpu() for b in ctx.train.images.split(batch_size)])
    texts = torch.cat([model.encode_text(b.to(ctx.device)).cpu() for b in ctx.train.text_features.split(batch_size)])
    return torch.cat([images[ctx.train.pair_image], texts], dim=1)


def kmeans(points: Tensor, k: int, iterations: int, generator: torch.Generator) -> Tensor:
    """k centroids: k-means++ seeding (distinct points), then Lloyd steps."""
    centroids = points[torch.randint(len(points), (1,), generator=generator)]
    for _ in range(k - 1):
        gap = torch.cdist(points, centroids).min(dim=1).values.square()
        # All zero when every point sits on a centroid (fewer distinct points than k): any will do.
        weights = gap if gap.sum() > 0 else torch.ones_like(gap)
        centroids = torch.cat([centroids, points[torch.multinomial(weights, 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(points, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        filled = counts > 0  # an empty cluster keeps its centroid
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


def nearest_distinct(points: Tensor, centroids: Tensor) -> list[int]:
    """For each centroid in turn, the index of the nearest point not taken by an earlier one."""
    k = len(centroids)
    # Earlier centroids take at most k - 1 points, so each centroid's k nearest suffice.
    candidates = torch.cdist(centroids, points).topk(k, dim=1, largest=False).indices.tolist()
    picked: list[int] = []
    for row in candidates:
        picked.append(next(i for i in row if i not in picked))
    return picked

