"""Image<->text retrieval recall@K, in both directions, and its summary over evaluation seeds."""
from __future__ import annotations

import statistics

import torch
from torch import Tensor

KS = (1, 5, 10)
METRIC_KEYS = ("tr@1", "tr@5", "tr@10", "ir@1", "ir@5", "ir@10", "mean")

# Score-matrix elements per chunk: bounds memory (16 MB of float32 scores; larger chunks are no faster) at any data size.
_CHUNK_ELEMENTS = 1 << 22


def retrieval_metrics(
    image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor, chunk_size: int | None = None
) -> dict[str, float]:
    """Recall@1/5/10 in percent for image->text ("tr@K") and text->image ("ir@K"), and their mean.

    Scores are dot products (the embeddings are expected to be L2-normalised). An image is a TR
    hit at K when its best-scoring caption ranks in the top K among all captions; a caption is an
    IR hit at K when its image ranks in the top K among all images. Every image needs at least
    one caption (`text_to_image[j]` is the image of caption j).

    Ties count pessimistically: a wrong item whose score equals the best correct one ranks ahead
    of it, so a constant model scores chance level rather than 100. A NaN score (a diverged
    model) likewise ranks ahead, and a NaN correct score is a miss.

    Queries are processed `chunk_size` at a time (default: as many as keep a chunk's score
    matrix near 4M elements); each query's rank depends only on its own row of scores, so the
    result does not depend on the chunk size.
    """
    n_img, n_txt = len(image_emb), len(text_emb)
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with one D, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    text_to_image = text_to_image.to(device=image_emb.device, dtype=torch.long)
    if text_to_image.shape != (n_txt,):
        raise ValueError(f"text_to_image must have shape ({n_txt},), got {tuple(text_to_image.shape)}")
    if n_txt and (text_to_image.min() < 0 or text_to_image.max() >= n_img):
        raise ValueError(f"text_to_image holds image indices outside [0, {n_img})")
    if (torch.bincount(text_to_image, minlength=n_img) == 0).any():
        raise ValueError("every image needs at least one caption")

    image_emb, text_emb = image_emb.float(), text_emb.to(image_emb.device).float()
    tr_rank = _tr_ranks(image_emb, text_emb, text_to_image, chunk_size or max(1, _CHUNK_ELEMENTS // max(n_txt, 1)))
    ir_rank = _ir_ranks(image_emb, text_emb, text_to_image, chunk_size or max(1, _CHUNK_ELEMENTS // max(n_img, 1)))

    out = {}
    for prefix, rank in (("tr", tr_rank), ("ir", ir_rank)):
        for k in KS:
            out[f"{prefix}@{k}"] = 100.0 * (rank < k).double().mean().item()
    out["mean"] = sum(out.values()) / len(out)
    return out


def _tr_ranks(image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor, chunk: int) -> Tensor:
    """For each image: how many wrong captions score at least as high as its best caption."""
    ranks = torch.empty(len(image_emb), dtype=torch.long, device=image_emb.device)
    for start in range(0, len(image_emb), chunk):
        images = torch.arange(start, min(start + chunk, len(image_emb)), device=image_emb.device)
        scores = image_emb[images] @ text_emb.T  # (chunk, n_txt)
        correct = text_to_image[None, :] == images[:, None]
        best = scores.masked_fill(~correct, float("-inf")).amax(dim=1, keepdim=True)  # NaN propagates
        # ~(s < best) rather than s >= best: NaN on either side then counts as ranking ahead.
        ranks[images] = (~(scores < best) & ~correct).sum(dim=1)
    return ranks


def _ir_ranks(image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor, chunk: int) -> Tensor:
    """For each caption: how many other images score at least as high as its own image."""
    ranks = torch.empty(len(text_emb), dtype=torch.long, device=image_emb.device)
    for start in range(0, len(text_emb), chunk):
        stop = min(start + chunk, len(text_emb))
        scores = text_emb[start:stop] @ image_emb.T  # (chunk, n_img)
        own_score = scores.gather(1, text_to_image[start:stop, None])
        # The own image always counts itself (also when NaN), hence the - 1.
        ranks[start:stop] = (~(scores < own_score)).sum(dim=1) - 1
    return ranks


def summarize(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and population standard deviation (ddof=0, as numpy's default) of each metric.

    With a single seed the standard deviation is 0.
    """
    if not per_seed:
        raise ValueError("no per-seed metrics to summarize")
    keys = list(per_seed[0])
    if any(m.keys() != per_seed[0].keys() for m in per_seed):
        raise ValueError("all per-seed metric dicts must have the same keys")
    return {
        "mean": {k: statistics.fmean(m[k] for m in per_seed) for k in keys},
        "std": {k: statistics.pstdev(m[k] for m in per_seed) for k in keys},
    }
