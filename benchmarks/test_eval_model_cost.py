"""What one evaluation model costs on each candidate second architecture, as a ratio to the tiny ViT's:
process CPU time in one process, one thread, alternating rounds (a busy machine distorts ratios least).

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_eval_model_cost.py -s

One evaluation model is what `vlbench run --condenser random --budget 100 --evals 1 --backbone B` trains
and scores: a fresh model in the default regime (encoder frozen under rank-4 LoRA adapters, heads
trained) trained for the protocol's 300 SGD steps on 100 pairs (batch 128, so the whole set each step),
then the test split embedded (1000 images, 5000 captions) and scored. Images are random at each
backbone's own resolution (tiny ViT 36 px, ConvNet 32 px, depth 3) and text features random 384-d:
the cost does not depend on the values, nor on pretrained weights (`pretrained: null`).

Each round times STEPS training steps and one evaluation of every candidate, in an order rotated from
round to round; a model costs (protocol steps) x (median CPU seconds per step) + (median evaluation).
`flops_per_image` is torch's FlopCounterMode over one image through the image encoder and head.
"""
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlbench.api import Pairs, TrainProtocol
from vlbench.plugins import registry
from vlbench.train import TrainData, evaluate, train

PROTOCOL = TrainProtocol()  # the board's: 300 steps, batch 128
PAIRS, TEST_IMAGES, CAPTIONS_PER_IMAGE = 100, 1000, 5
STEPS, ROUNDS = 20, 3
BASELINE = "tinyvit-minilm"
CANDIDATES = {BASELINE: ("tinyvit-minilm", {}),
              **{f"convnet-minilm width {w}": ("convnet-minilm", {"width": w}) for w in (32, 64, 128)}}


def backbone(name: str):
    kind, options = CANDIDATES[name]
    return registry().get("backbone", kind)(pretrained=None, **options)


def shaped_like_the_data(b) -> tuple[TrainData, Pairs]:
    g = torch.Generator().manual_seed(0)
    side, dim = b.image_size, b.text_encoder.dim
    condensed = TrainData(torch.randn(PAIRS, 3, side, side, generator=g), torch.arange(PAIRS),
                          torch.randn(PAIRS, dim, generator=g))
    captions = TEST_IMAGES * CAPTIONS_PER_IMAGE
    test = Pairs(torch.randn(TEST_IMAGES, 3, side, side, generator=g),
                 torch.arange(TEST_IMAGES).repeat_interleave(CAPTIONS_PER_IMAGE),
                 torch.randn(captions, dim, generator=g), [""] * captions)
    return condensed, test


def cpu_seconds(fn, *args, **kwargs) -> float:
    start = time.process_time()
    fn(*args, **kwargs)
    return time.process_time() - start


def flops_per_image(b) -> int:
    model = b.build(0)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encode_image(torch.randn(1, 3, b.image_size, b.image_size))
    return counter.get_total_flops()


def measure() -> dict[str, dict[str, float]]:
    backbones = {name: backbone(name) for name in CANDIDATES}
    data = {name: shaped_like_the_data(b) for name, b in backbones.items()}
    step_s = {name: [] for name in CANDIDATES}
    eval_s = {name: [] for name in CANDIDATES}
    names = list(CANDIDATES)
    for r in range(ROUNDS + 1):  # round 0 warms up
        for name in names[r % len(names):] + names[: r % len(names)]:
            model = backbones[name].build(0)
            condensed, test = data[name]
            seconds = cpu_seconds(train, model, condensed, PROTOCOL, 0, steps=STEPS)
            evaluation = cpu_seconds(evaluate, model, test)
            if r:
                step_s[name].append(seconds / STEPS)
                eval_s[name].append(evaluation)
    cost = {n: PROTOCOL.steps * statistics.median(step_s[n]) + statistics.median(eval_s[n]) for n in CANDIDATES}
    flops = {n: flops_per_image(b) for n, b in backbones.items()}
    return {n: {"model_cpu_s": round(cost[n], 1), "ratio": round(cost[n] / cost[BASELINE], 2),
                "step_ratio": round(statistics.median(step_s[n]) / statistics.median(step_s[BASELINE]), 2),
                "eval_ratio": round(statistics.median(eval_s[n]) / statistics.median(eval_s[BASELINE]), 2),
                "flops_per_image": flops[n], "flops_ratio": round(flops[n] / flops[BASELINE], 2)}
            for n in CANDIDATES}


def test_evaluation_model_cost(benchmark):
    benchmark.group = f"one evaluation model ({PAIRS} pairs, {PROTOCOL.steps} steps, test split), ratio to {BASELINE}"
    result = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    for name, row in result.items():
        print(f"\n{name:26s} " + "  ".join(f"{k} {v}" for k, v in row.items()), end="")
    print()
    widths = [result[f"convnet-minilm width {w}"]["model_cpu_s"] for w in (32, 64, 128)]
    assert widths == sorted(widths)  # a wider ConvNet never costs less
