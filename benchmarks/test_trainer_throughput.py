"""Throughput of the one trainer (evaluation models and experts) with the default backbone.

    .venv/bin/pytest benchmarks/test_trainer_throughput.py

SGD steps of `vlbench.train.train` at the default protocol's batch (128) on random pairs shaped
like the embedded data (36 px images, 384-d MiniLM text features), for the default LoRA regime
(rank 4 adapters on a frozen tiny ViT) and for full fine-tuning (`lora_rank: 0`).
"""
import pytest
import torch

from vlbench.api import TrainProtocol
from vlbench.plugins import registry
from vlbench.train import TrainData, train

STEPS = 10
PROTOCOL = TrainProtocol(steps=STEPS, batch_size=128)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
REGIMES = {"lora": {}, "full-finetune": {"lora_rank": 0}}


def random_pairs(backbone, num_pairs: int = 1024) -> TrainData:
    g = torch.Generator().manual_seed(0)
    size = backbone.image_size
    return TrainData(torch.randn(num_pairs, 3, size, size, generator=g), torch.arange(num_pairs),
                     torch.randn(num_pairs, backbone.text_encoder.dim, generator=g))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("regime", REGIMES)
def test_train_steps(benchmark, regime, device):
    backbone = registry().get("backbone", "tinyvit-minilm")(pretrained=None, **REGIMES[regime])
    data = random_pairs(backbone)
    benchmark.group = f"trainer, {backbone.name}, batch {PROTOCOL.batch_size}, {STEPS} steps"
    # A fresh model per round, built outside the timed call.
    benchmark.pedantic(train, setup=lambda: ((backbone.build(0, device), data, PROTOCOL, 0), {"device": device}),
                       rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["pairs_per_s"] = round(STEPS * PROTOCOL.batch_size / benchmark.stats.stats.min)
