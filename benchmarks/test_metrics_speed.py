"""Retrieval recall@1/5/10, both directions, at the test sizes of Flickr30K and COCO (Karpathy splits).

    .venv/bin/pytest benchmarks/test_metrics_speed.py

Embeddings are random, L2-normalised, 512-d (a CLIP-sized joint space), five captions per image;
the score matrix is never held whole (chunks of about 4M scores).
"""
import pytest
import torch

from vlbench.metrics import retrieval_metrics

SIZES = {"flickr30k-test": 1000, "coco-test": 5000}  # images; five captions each
DIM = 512
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def embeddings(num_images: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(num_images, DIM, generator=g), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(5 * num_images, DIM, generator=g), dim=1)
    return images.to(device), texts.to(device), torch.arange(5 * num_images) // 5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split", SIZES)
def test_retrieval_metrics(benchmark, split, device):
    images, texts, text_to_image = embeddings(SIZES[split], device)
    benchmark.group = f"retrieval metrics, {len(images)} images x {len(texts)} captions, {DIM}-d"
    metrics = benchmark.pedantic(retrieval_metrics, args=(images, texts, text_to_image), rounds=3, iterations=1,
                                 warmup_rounds=1)
    # Random embeddings retrieve at chance: R@10 of one image among N is about 10/N.
    assert metrics["ir@10"] == pytest.approx(100 * 10 / len(images), rel=0.5)
