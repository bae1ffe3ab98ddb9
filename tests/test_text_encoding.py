"""The fast caption-encoding path (`vlbench.text_encoders.encode_by_length`) keeps the features.

The default encoder's cached features are keyed by its id only, so the fast path must give what the
previous path (sentence-transformers' own `encode`, padded length-sorted batches) gave, to float
rounding, on real captions of the embedded data set.
"""
import numpy as np
import pytest
import torch

from vlbench.api import VLBenchError
from vlbench.data.karpathy import clean_caption
from vlbench.data.synthscenes import _sample_scene, captions
from vlbench.text_encoders import encode_by_length, encode_workers

TOLERANCE = 1e-5


def real_captions(scenes: int, seed: int = 0) -> list[str]:
    """Captions as the synthscenes data set holds them (generated, then cleaned by the Karpathy reader)."""
    rng = np.random.default_rng(seed)
    return [clean_caption(c) for _ in range(scenes) for c in captions(_sample_scene(rng), rng)]


@pytest.fixture(scope="module")
def minilm():
    from vlbench_plugins.tinyvit_minilm import minilm_encoder

    return minilm_encoder()


def test_minilm_features_match_the_sentence_transformers_path(minilm, monkeypatch):
    texts = real_captions(80)
    texts += texts[:7]  # repeated captions are encoded once and copied
    with torch.inference_mode():
        reference = minilm._load().encode(texts, batch_size=256, convert_to_tensor=True, normalize_embeddings=False)
    monkeypatch.setenv("VLBENCH_ENCODE_WORKERS", "1")
    one_worker = minilm.encode(texts, batch_size=16)
    assert one_worker.dtype == torch.float32 and one_worker.shape == (len(texts), minilm.dim)
    assert (one_worker - reference).abs().max().item() < TOLERANCE
    assert torch.equal(one_worker[-7:], one_worker[:7])
    monkeypatch.setenv("VLBENCH_ENCODE_WORKERS", "3")
    assert torch.equal(minilm.encode(texts, batch_size=16), one_worker)  # same numbers, any workers
    assert minilm.encode([]).shape == (0, minilm.dim)


def test_batches_hold_one_token_count_and_each_caption_once():
    texts = ["a b", "c", "d e f", "a b", "g h", "i", "j k l", "m n", "c"]
    seen = []

    def prepare(batch):
        seen.append(batch)
        return batch

    def forward(batch):  # a feature that names the caption: rows must land where their caption is
        return torch.tensor([[float(len(t)), float(sum(map(ord, t)))] for t in batch])

    threads = torch.get_num_threads()
    out = encode_by_length(texts, lambda ts: [len(t.split()) for t in ts], prepare, forward, dim=2, batch_size=2,
                           desc="test", workers=2)
    assert torch.equal(out, forward(texts))
    assert sorted(t for batch in seen for t in batch) == sorted(set(texts))
    assert all(len(batch) <= 2 and len({len(t.split()) for t in batch}) == 1 for batch in seen)
    assert torch.get_num_threads() == threads  # the one-thread setting of the workers is undone


def test_encode_workers_setting(monkeypatch):
    monkeypatch.delenv("VLBENCH_ENCODE_WORKERS", raising=False)
    assert encode_workers() >= 1
    monkeypatch.setenv("VLBENCH_ENCODE_WORKERS", "2")
    assert encode_workers() == 2
    monkeypatch.setenv("VLBENCH_ENCODE_WORKERS", "0")
    with pytest.raises(VLBenchError, match="VLBENCH_ENCODE_WORKERS"):
        encode_workers()
