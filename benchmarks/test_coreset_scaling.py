"""Coreset selection time at 10k, 100k and COCO size (566,747 pairs), budget 1000, on the CPU.

    .venv/bin/pytest benchmarks/test_coreset_scaling.py --benchmark-columns=min,max,mean

Features are shaped like `pair_features` output: 512-d, an L2-normalised 256-d image half
shared by the five captions of an image and an L2-normalised 256-d caption half. Random
(isotropic) halves are a hard case for herding's block-wise guessing: its ranking reshuffles at
every pick. One round each; the 566k runs take tens of seconds on two cores.
"""
import pytest
import torch

from vlbench.coreset import herding, kcenter_greedy, most_forgotten

SIZES = [10_000, 100_000, 566_747]
BUDGET = 1000
DIM = 512


def pair_like_features(num_pairs: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(num_pairs // 5 + 1, DIM // 2, generator=g), dim=1)
    captions = torch.nn.functional.normalize(torch.randn(num_pairs, DIM // 2, generator=g), dim=1)
    return torch.cat([images[torch.arange(num_pairs) // 5], captions], dim=1)


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n}pairs")
def features(request):
    return pair_like_features(request.param)


SELECTORS = {
    "herding": lambda x: herding(x, BUDGET),
    "kcenter": lambda x: kcenter_greedy(x, BUDGET, seed=0),
    # Selection only: the counts come from training, which the benchmark leaves out.
    "forgetting": lambda x: most_forgotten(torch.randint(0, 6, (len(x),), generator=torch.Generator().manual_seed(0)), BUDGET, seed=0),
}


@pytest.mark.parametrize("method", SELECTORS)
def test_selection_time(benchmark, features, method):
    benchmark.group = f"{len(features)} pairs x {features.shape[1]}-d, budget {BUDGET}"
    picked = benchmark.pedantic(SELECTORS[method], args=(features,), rounds=1, iterations=1)
    assert len(picked) == BUDGET and picked.unique().numel() == BUDGET
