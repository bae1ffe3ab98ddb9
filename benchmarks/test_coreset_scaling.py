"""Coreset selection time at 10k, 100k and COCO size (566,747 pairs), budget 1000, on the CPU.

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_coreset_scaling.py \
        --benchmark-columns=min --benchmark-timer=time.process_time

(`process_time` with one thread: CPU seconds, which a busy shared machine distorts far less than
wall time.) Features are shaped like `pair_features` output, 512-d: an L2-normalised 256-d image
half shared by the five captions of an image, and an L2-normalised 256-d caption half. Two kinds:

- `low-rank`: both halves driven by 32 latent factors of their image (the caption's with its own
  perturbation) plus noise; 97% of the energy lies in ~48 directions, like the joint embeddings of
  a trained model (56 on the embedded default). The realistic case.
- `isotropic`: independent random halves. The worst case for the engine's guesses: no sketch
  applies and herding's ranking reshuffles at every pick.
"""
import pytest
import torch
import torch.nn.functional as F

from vlbench.coreset import herding, kcenter_greedy, most_forgotten

SIZES = [10_000, 100_000, 566_747]
BUDGET = 1000
DIM = 512
CAPTIONS_PER_IMAGE = 5


def pair_like_features(num_pairs: int, kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    half = DIM // 2
    owner = torch.arange(num_pairs) // CAPTIONS_PER_IMAGE
    num_images = int(owner[-1]) + 1
    if kind == "isotropic":
        images, captions = torch.randn(num_images, half, generator=g), torch.randn(num_pairs, half, generator=g)
    else:
        latent = torch.randn(num_images, 32, generator=g)
        to_image, to_caption = torch.randn(32, half, generator=g), torch.randn(32, half, generator=g)
        images = latent @ to_image + 0.57 * torch.randn(num_images, half, generator=g)
        captions = (latent[owner] + 0.5 * torch.randn(num_pairs, 32, generator=g)) @ to_caption
        captions += 0.57 * torch.randn(num_pairs, half, generator=g)
    return torch.cat([F.normalize(images, dim=1)[owner], F.normalize(captions, dim=1)], dim=1)


@pytest.fixture(scope="module", params=[(n, kind) for kind in ("low-rank", "isotropic") for n in SIZES],
                ids=lambda p: f"{p[0]}pairs-{p[1]}")
def features(request):
    return pair_like_features(*request.param)


SELECTORS = {
    "herding": lambda x: herding(x, BUDGET),
    "kcenter": lambda x: kcenter_greedy(x, BUDGET, seed=0),
    # Selection only: the counts come from training, which this benchmark leaves out.
    "forgetting": lambda x: most_forgotten(torch.randint(0, 6, (len(x),), generator=torch.Generator().manual_seed(0)),
                                           BUDGET, seed=0),
}


@pytest.mark.parametrize("method", SELECTORS)
def test_selection_time(benchmark, features, method):
    benchmark.group = f"{len(features)} pairs, budget {BUDGET}"
    picked = benchmark.pedantic(SELECTORS[method], args=(features,), rounds=1, iterations=1)
    assert len(picked) == BUDGET and picked.unique().numel() == BUDGET
