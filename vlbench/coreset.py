"""Coreset selection for image-text pairs: herding, k-center greedy and forgetting.

Tensor-level and plugin-free, so that any condenser can import them. Definitions, tie rules and
the reasons behind them are in docs/coresets.md.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

from vlbench.api import CondenseContext, Pairs, TrainProtocol, VLBenchError, VLModel, check_budget
from vlbench.train import TrainData, embed, train

log = logging.getLogger(__name__)

#: update(score, column, rows, j): the scores of `rows` after picking j (may update `score` in place),
#: where column = features[rows] @ features[j] and rows is `slice(None)` for all rows.
Update = Callable[[Tensor, Tensor, "slice | Tensor", int], Tensor]

_ALL = slice(None)


def random_pairs(ctx: CondenseContext) -> Tensor:
    """The training pairs `random` returns for the context's budget and seed: int64 indices, drawn without
    replacement. A method that starts from them starts where `random` ends (iteration 0 is the random
    coreset), so its comparison with `random` is paired, seed by seed."""
    ctx.check_budget()
    return torch.randperm(len(ctx.train), generator=torch.Generator().manual_seed(ctx.seed))[: ctx.budget]


@torch.no_grad()
def pair_features(model: VLModel, pairs: Pairs, device: torch.device | str = "cpu") -> Tensor:
    """(num_pairs, 2 * joint_dim): each pair's image embedding next to its caption's embedding.

    Both halves are L2-normalised by the model; images are embedded once each, not once per pair.
    """
    images, texts = embed(model, pairs, device)
    return torch.cat([images[pairs.pair_image], texts], dim=1)


def reference_features(ctx: CondenseContext) -> Tensor:
    """`pair_features` of the context's full-data reference model for its seed, on its device."""
    ctx.check_budget()  # before training a reference model for nothing
    if ctx.reference_model is None:
        raise VLBenchError("this condenser needs ctx.reference_model (the vlbench runner provides it)")
    return pair_features(ctx.reference_model(ctx.seed), ctx.train, ctx.device).to(ctx.device)


# ----------------------------------------------------------------------------- greedy engine


def _sketch(features: Tensor, max_rank: int, energy: float = 0.97, sample: int = 20_000) -> Tensor | None:
    """Every row's coordinates in the fewest principal directions that hold `energy` of the features'
    energy (uncentred, estimated on a fixed sample of rows); None unless that is `max_rank` or fewer.

    Dot products in this space predict the true ones on clustered, low-rank features such as joint
    embeddings (rank 56 of 512 holds 97% on the embedded default), at a fraction of their cost.
    """
    if max_rank < 1:
        return None
    rows = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:sample].to(features.device)]
    values, vectors = torch.linalg.eigh(rows.T @ rows)  # ascending
    held = values.flip(0).cumsum(0) / values.sum()
    rank = int((held < energy).sum()) + 1
    return features @ vectors[:, -rank:] if rank <= max_rank else None


def _guess(features: Tensor, sketch: Tensor | None, score: Tensor, update: Update, pending: list[int], count: int,
           pool_size: int) -> list[int]:
    """The next `count` greedy picks, on scores that are exact for the `pool_size` best-scoring rows
    and, for the others, stay put or (with a sketch) move by the sketch's dot products."""
    rows = score.topk(min(pool_size, len(score))).indices.sort().values  # index order: ties go low, as in the replay
    pool, s = features[rows], score.clone()
    guesses: list[int] = []
    for j in pending + [None] * count:
        if j is None:
            j = int(s.argmax())
            guesses.append(j)
        exact = update(s[rows], pool @ features[j], rows, j)
        if sketch is not None:
            s = update(s, sketch @ sketch[j], _ALL, j)
        s[rows] = exact
        s[j] = -torch.inf
    return guesses


@torch.no_grad()
def greedy_select(
    features: Tensor, budget: int, score: Tensor, update: Update, first: int | None = None,
    pool_size: int = 4096, max_block: int = 64, sketch_rank: int = 64,
) -> Tensor:
    """Pick `budget` distinct rows one at a time, each the argmax of `score` (lowest index on ties).

    After each pick j the scores become update(score, features @ features[j], all rows, j).
    Computing that column pick by pick reads all of `features` once per pick (memory-bound: 1000
    passes over 1 GB at COCO size). Instead, each block guesses the next picks (see `_guess`),
    computes all their columns in one matrix product, and replays the picks on every row.
    Guesses are kept up to the first wrong one, whose true pick the replay has just found; so the
    result is exactly the pick-by-pick greedy, and the guesses only decide how much work is done.
    """
    check_budget(budget, len(features), "pairs to select from")
    sketch = _sketch(features, sketch_rank)
    score = score.clone()
    picks = [] if first is None else [first]
    score[picks] = -torch.inf
    applied = 0  # picks[:applied] are reflected in `score`
    block = 2
    while len(picks) < budget:
        pending = picks[applied:]
        guesses = _guess(features, sketch, score, update, pending, min(block, budget - len(picks)), pool_size)
        # Row c: every row's dot product with pick c ((N, D) @ (D, m) is the fast way round for small m).
        columns = (features @ features[pending + guesses].T).T.contiguous()
        for c, j in enumerate(pending):
            score = update(score, columns[c], _ALL, j)
        applied, verified = len(picks), 0
        for c, guess in enumerate(guesses, start=len(pending)):
            j = int(score.argmax())
            picks.append(j)
            score[j] = -torch.inf
            if j != guess:
                break  # j is right, but its column is not computed yet: it is pending for the next block
            score = update(score, columns[c], _ALL, j)
            applied, verified = applied + 1, verified + 1
        # Runs of right guesses are long for k-center (grow fast) and short for herding (guess a
        # little past the last run: each wrong guess costs a full column).
        block = min(max_block, 2 * verified if verified == len(guesses) else verified + 2)
    return torch.tensor(picks, dtype=torch.long)


# ----------------------------------------------------------------------------- herding and k-center


def _squared_norms(features: Tensor) -> Tensor:
    return torch.linalg.vector_norm(features, dim=1).square_()  # no (N, D) temporary, unlike features ** 2


def herding(features: Tensor, budget: int, **engine) -> Tensor:
    """Greedy herding: each pick keeps the mean of the picked rows closest to the mean of all rows.

    Pick k+1 minimises ||(S + x) / (k+1) - mu||^2 over unpicked x (S: sum of the k picks), i.e.
    maximises 2 x.((k+1) mu - S) - ||x||^2; each pick j adds 2 (x.mu - x.x_j) to that score.
    """
    mean_dot = features @ features.mean(0)
    score = 2 * mean_dot - _squared_norms(features)
    return greedy_select(features, budget, score, lambda s, col, rows, j: s.add_(mean_dot[rows] - col, alpha=2), **engine)


def kcenter_greedy(features: Tensor, budget: int, seed: int, **engine) -> Tensor:
    """Farthest-first traversal: a seeded first centre, then the row farthest from its nearest centre.

    Keeps each row's squared distance to its nearest centre (O(N) memory, no N x N matrix).
    """
    first = int(torch.randint(len(features), (1,), generator=torch.Generator().manual_seed(seed)))
    sq_norm = _squared_norms(features)

    def update(nearest: Tensor, col: Tensor, rows, j: int) -> Tensor:
        return torch.minimum(nearest, torch.add(sq_norm[rows], col, alpha=-2).add_(sq_norm[j]).clamp_min_(0))

    nearest = torch.full((len(features),), torch.inf, dtype=features.dtype, device=features.device)
    # No sketch by default: the farthest pairs stay in the pool of the farthest, so guesses from the
    # pool alone are already right (blocks of 64), and a sketch would only add its cost.
    return greedy_select(features, budget, nearest, update, first=first, **{"sketch_rank": 0, **engine})


# ----------------------------------------------------------------------------- forgetting


def probe_batches(num_pairs: int, batch_size: int, seed: int) -> list[Tensor]:
    """A fixed, seeded partition of the pairs into batches of `batch_size` (the last may be short)."""
    order = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(seed))
    return list(order.split(batch_size))


def probe_correct(image_emb: Tensor, text_emb: Tensor, pair_image: Tensor, batches: list[Tensor]) -> Tensor:
    """Per pair: is it retrieved correctly, both ways, within its probe batch?

    image_emb holds one row per image, text_emb one per pair. Pair i is correct when its image
    scores some caption of that image strictly above every other image's caption in the batch,
    and its caption scores that image strictly above every other image in the batch.
    """
    correct = torch.zeros(len(pair_image), dtype=torch.bool)
    for batch in batches:
        owner = pair_image[batch]
        same = owner[:, None] == owner[None, :]
        sim = image_emb[owner] @ text_emb[batch].T  # rows: the batch's pairs' images; columns: their captions
        both = [
            s.masked_fill(~same, -torch.inf).amax(1) > s.masked_fill(same, -torch.inf).amax(1) for s in (sim, sim.T)
        ]
        correct[batch] = both[0] & both[1]
    return correct


def forgetting_counts(correct: Tensor) -> Tensor:
    """Forgetting events per pair from an (epochs, num_pairs) history: correct at one epoch end, wrong at the next."""
    return (correct[:-1] & ~correct[1:]).sum(0)


def learned(correct: Tensor, batch_size: int) -> tuple[bool, str]:
    """Whether probe outcomes rose above twice chance, and the numbers that say so."""
    accuracy, chance = correct.float().mean().item(), 1 / batch_size
    return accuracy >= 2 * chance, f"mean probe accuracy {accuracy:.3f}, chance {chance:.3f}"


def check_learned(correct: Tensor, batch_size: int) -> None:
    """Refuse a history whose model never rose above chance: its forgetting events would be noise."""
    ok, numbers = learned(correct, batch_size)
    if not ok:
        raise VLBenchError(f"forgetting: the full-data training run diverged ({numbers}); lower the condenser option `lr`")


def warn_if_unlearned(model: VLModel, pairs: Pairs, batch_size: int, seed: int, device: torch.device | str = "cpu") -> bool:
    """Warn when a full-data reference model retrieves its own training pairs no better than twice chance (coresets
    would select with noise); True when it learned. A warning, not an error: smoke runs train a few steps on purpose."""
    batch_size = min(batch_size, len(pairs))
    ok, numbers = learned(probe_correct(*embed(model, pairs, device), pairs.pair_image,
                                        probe_batches(len(pairs), batch_size, seed)), batch_size)
    if not ok:
        log.warning(f"the full-data reference model (seed {seed}) did not learn ({numbers}): herding and k-center "
                    "select with noise; with the board's protocol, lower vlbench.core.FULL_DATA_LR and choose it on val")
    return ok


def most_forgotten(counts: Tensor, budget: int, seed: int) -> Tensor:
    """The `budget` pairs with the most forgetting events, ties in a seeded random order."""
    check_budget(budget, len(counts), "pairs to select from")
    order = torch.randperm(len(counts), generator=torch.Generator().manual_seed(seed))
    ranked = order[counts[order].argsort(descending=True, stable=True)]
    return ranked[:budget]


def training_steps(num_pairs: int, protocol: TrainProtocol, epochs: int) -> int:
    """Steps of the shared trainer that make `epochs` full passes over `num_pairs` pairs."""
    return epochs * -(-num_pairs // min(protocol.batch_size, num_pairs))


def correctness_history(
    model: VLModel, pairs: Pairs, protocol: TrainProtocol, epochs: int, seed: int, device: torch.device | str = "cpu",
    on_step: Callable[[], object] | None = None,
) -> Tensor:
    """Train `model` on all pairs for `epochs` epochs with the shared trainer; (epochs, num_pairs) probe outcomes."""
    batch_size = min(protocol.batch_size, len(pairs))
    batches = probe_batches(len(pairs), batch_size, seed)
    history = []

    def probe(epoch: int, model: VLModel) -> None:
        history.append(probe_correct(*embed(model, pairs, device), pairs.pair_image, batches))
        model.train()  # embed() leaves the model in eval mode; training resumes after this callback

    train(model, TrainData.from_pairs(pairs), protocol, seed, steps=training_steps(len(pairs), protocol, epochs),
          device=device, on_epoch_end=probe, on_step=on_step)
    return torch.stack(history)
