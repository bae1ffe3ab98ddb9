"""Caption encoding with the frozen MiniLM (the cold start's longest stage): candidates as ratios to
the previous path, in one process, on real captions of the embedded data set.

    VLBENCH_CACHE=/tmp/my-cache OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_caption_encoding.py \
        --benchmark-columns=min,median,rounds -s

The baseline is what vlbench did before: sentence-transformers' `encode` (sorted by characters,
padded batches of 256, inference mode) with the thread count `scripts/bench.sh` sets (1). Each
candidate saves in its extra_info its median wall and process-CPU time as a speed-up over the
baseline (`speedup_wall`, `speedup_cpu`; above 1 is faster) and the largest absolute difference of
its features from the baseline's (`max_abs_diff`). CPU time is what a busy machine distorts least;
wall time is what a user waits for, and the only one that shows several workers' gain. The first
test sets the baseline: run the whole file.

A random sample holds few captions of each token count (about 50 here, 1700 in the train split),
so the batch size is measured apart (`test_batch_size`): captions of one token count, the
median's, CPU time of one worker.
"""
import os
import random
import time

import pytest
import torch

from vlbench.plugins import registry

SAMPLE = 1500  # captions drawn from the train split (seeded)
ROUNDS = 3


@pytest.fixture(scope="module")
def captions() -> list[str]:
    dataset = registry().get("dataset", "synthscenes")().load(None)  # generated into $VLBENCH_CACHE if missing
    return random.Random(0).sample(dataset.split("train").pair_captions, SAMPLE)


@pytest.fixture(scope="module")
def encoder():
    from vlbench_plugins.tinyvit_minilm import minilm_encoder

    encoder = minilm_encoder()
    encoder._load()
    return encoder


@pytest.fixture(scope="module")
def baseline() -> dict:
    """Median wall and CPU seconds and the features of the baseline (test_previous_path fills it)."""
    return {}


def previous_path(encoder, captions, threads: int) -> torch.Tensor:
    torch.set_num_threads(threads)
    return encoder._load().encode(captions, batch_size=256, convert_to_tensor=True, normalize_embeddings=False)


def fast_path(encoder, captions, workers: int, batch_size: int) -> torch.Tensor:
    os.environ["VLBENCH_ENCODE_WORKERS"] = str(workers)
    return encoder.encode(captions, batch_size=batch_size)


def measure(benchmark, run, *args):
    """Time ROUNDS calls; the median process-CPU seconds of a call go with the wall time."""
    cpu = []

    def timed():
        start = time.process_time()
        out = run(*args)
        cpu.append(time.process_time() - start)
        return out

    threads, workers = torch.get_num_threads(), os.environ.get("VLBENCH_ENCODE_WORKERS")
    try:
        features = benchmark.pedantic(timed, rounds=ROUNDS, iterations=1)
    finally:
        torch.set_num_threads(threads)
        os.environ.pop("VLBENCH_ENCODE_WORKERS", None)
        if workers is not None:
            os.environ["VLBENCH_ENCODE_WORKERS"] = workers
    return features, sorted(cpu)[len(cpu) // 2]


def test_previous_path(benchmark, encoder, captions, baseline):
    benchmark.group = f"encode {SAMPLE} synthscenes captions, MiniLM"
    baseline["features"], baseline["cpu"] = measure(benchmark, previous_path, encoder, captions, 1)
    baseline["wall"] = benchmark.stats.stats.median


CANDIDATES = {
    "previous path, 2 threads": (previous_path, 2),
    "by length, 1 worker": (fast_path, 1, 128),
    "by length, 2 workers": (fast_path, 2, 128),
}


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_candidate(benchmark, encoder, captions, baseline, candidate):
    if "wall" not in baseline:
        pytest.skip("run test_previous_path first (run the whole file)")
    benchmark.group = f"encode {SAMPLE} synthscenes captions, MiniLM"
    run, *options = CANDIDATES[candidate]
    features, cpu = measure(benchmark, run, encoder, captions, *options)
    info = {"speedup_wall": round(baseline["wall"] / benchmark.stats.stats.median, 2),
            "speedup_cpu": round(baseline["cpu"] / cpu, 2),
            "max_abs_diff": float((features - baseline["features"]).abs().max())}
    benchmark.extra_info.update(info)
    print(f"\n{candidate}: {info}")
    assert info["max_abs_diff"] < 1e-5


@pytest.fixture(scope="module")
def one_length(encoder) -> list[str]:
    """1024 distinct train captions of the median token count."""
    dataset = registry().get("dataset", "synthscenes")().load(None)
    unique = list(dict.fromkeys(dataset.split("train").pair_captions))
    counts = [len(ids) for ids in encoder._load().tokenizer(unique)["input_ids"]]
    median = sorted(counts)[len(counts) // 2]
    return random.Random(0).sample([c for c, n in zip(unique, counts) if n == median], 1024)


@pytest.mark.parametrize("batch_size", [32, 64, 128, 256, 512])
def test_batch_size(benchmark, encoder, one_length, batch_size):
    benchmark.group = "encode 1024 captions of one token count, MiniLM, 1 worker, by batch size"
    benchmark.extra_info["cpu_s"] = round(measure(benchmark, fast_path, encoder, one_length, 1, batch_size)[1], 2)
