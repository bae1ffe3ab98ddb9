"""What the official expert text features cost (`expert_text: live`, docs/fidelity.md row t): expert
training steps with the cached MiniLM features, and with MiniLM recomputing them in train mode every batch.

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_expert_text.py --benchmark-json=expert-text.json

The default backbone (`tinyvit-minilm`, its LoRA regime) at the experts' batch (128), on real captions
of the embedded data set (generated into $VLBENCH_CACHE if missing) and random 36 px images (pixel
values do not change a step's cost). An expert epoch is such steps, so the time ratio of the two is
the ratio of expert-epoch times: `extra_info["ratio_to_cached"]` in the JSON, both medians measured
in this process, one after the other.
"""
import statistics
import time

import pytest
import torch

from vlbench.api import Pairs
from vlbench.plugins import registry
from vlbench.tm import ExpertSpec
from vlbench.train import train

STEPS = 4
SPEC = ExpertSpec(epochs=1, lr=0.01, momentum=0.0, weight_decay=5e-4, batch_size=128)
ROUNDS = 3


@pytest.fixture(scope="module")
def backbone():
    return registry().get("backbone", "tinyvit-minilm")()


@pytest.fixture(scope="module")
def pairs(backbone) -> Pairs:
    captions = registry().get("dataset", "synthscenes")().load(None).split("train").pair_captions[: STEPS * 128]
    size = backbone.image_size
    images = torch.randn(len(captions), 3, size, size, generator=torch.Generator().manual_seed(0))
    return Pairs(images, torch.arange(len(captions)), backbone.text_encoder.encode(captions), captions)


def test_live_expert_text(benchmark, backbone, pairs):
    protocol = SPEC.protocol(STEPS)

    def steps(text: str) -> None:
        spec = ExpertSpec(**{**SPEC.__dict__, "text": text})
        train(backbone.build(0), spec.train_data(pairs, backbone.text_encoder), protocol, seed=0)

    steps("live")  # warm-up: MiniLM loaded, first-call allocations
    cached = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        steps("cached")
        cached.append(time.perf_counter() - start)
    benchmark.group = f"expert steps, {backbone.name}, batch {SPEC.batch_size}, {STEPS} steps"
    benchmark.pedantic(steps, args=("live",), rounds=ROUNDS, iterations=1)
    benchmark.extra_info["cached_median_s"] = round(statistics.median(cached), 3)
    benchmark.extra_info["ratio_to_cached"] = round(benchmark.stats.stats.median / statistics.median(cached), 2)
