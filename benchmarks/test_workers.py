"""Cores, threads and workers (vlbench/parallel.py): what a pool of single-threaded worker processes buys
the evaluation models, and why every number is computed on one thread.

    .venv/bin/pytest benchmarks/test_workers.py --benchmark-columns=min,rounds -s

`test_evaluation_stage`: one run (random, 100 pairs of a generated synthscenes tree, 4 evaluation
models of 100 steps each, the default protocol otherwise) with VLBENCH_JOBS=1 (one after another in
this process) and 2 (a pool of two workers); extra_info holds the evaluate stage's wall and CPU
seconds (this process and its workers) from the record, and checks the per-model numbers are equal.
`test_threads_change_the_numbers`: a tm-lora distillation (3 iterations, 10 inner steps, 100 pairs)
and an evaluation model (30 steps) at 1 and 2 torch threads: the largest difference between them.
"""
import pytest
import torch

from vlbench.core import RunSpec, TrainProtocol
from vlbench.data.synthscenes import generate
from vlbench.runner import run

EVALS, STEPS = 4, 100
per_seed: dict[int, list] = {}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    generate(root / "data", 0, train=200, val=0, test=100, pretrain=0)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluation_stage(benchmark, workers, tree, monkeypatch):
    monkeypatch.setenv("VLBENCH_CACHE", str(tree / "cache"))
    spec = RunSpec("random", 100, data_root=str(tree / "data"), evals=EVALS, protocol=TrainProtocol(steps=STEPS))
    monkeypatch.setenv("VLBENCH_JOBS", "1")
    run(spec, tree / "warm", progress=False)  # untimed: data, caption features and the condensed set, cached
    monkeypatch.setenv("VLBENCH_JOBS", str(workers))
    results = iter(range(100))
    record = benchmark.pedantic(lambda: run(spec, tree / f"timed-{workers}-{next(results)}", progress=False),
                                rounds=1, iterations=1)
    evaluate = record["stages"]["evaluate"]
    benchmark.group = f"evaluate stage: {EVALS} models x {STEPS} steps, random@100"
    benchmark.extra_info.update(workers=record["workers"], evaluate_wall_s=evaluate["wall_s"],
                                evaluate_cpu_s=evaluate["cpu_s"])
    print(f"\n{workers} worker(s): evaluate {evaluate['wall_s']:.1f} s wall, {evaluate['cpu_s']:.1f} s CPU")
    per_seed[workers] = record["metrics"]["per_seed"]
    assert record["workers"] == workers and per_seed[workers] == per_seed[1]


def largest_difference(compute) -> float:
    threads, results = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(compute())
    finally:
        torch.set_num_threads(threads)
    return max((a - b).abs().max().item() for a, b in zip(*results))


def test_threads_change_the_numbers(benchmark, tmp_path):
    from test_distill_iteration import make_distiller
    from vlbench.train import TrainData, train

    def distilled():
        distiller, bounds = make_distiller("tm-lora", 10, tmp_path / str(torch.get_num_threads()))
        for _ in range(3):
            distiller.step(bounds)
        return [distiller.images.detach().clone(), distiller.text.detach().clone()]

    def evaluation_model():
        from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

        g = torch.Generator().manual_seed(0)
        data = TrainData.from_condensed(torch.randn(100, 3, 36, 36, generator=g).clamp(-1, 1),
                                        torch.randn(100, 384, generator=g))
        model = TinyViTMiniLM(pretrained=None).build(0)
        train(model, data, TrainProtocol(steps=30, batch_size=50), 0)
        return [p.detach().clone() for p in model.trainable_parameters().values()]

    benchmark.group = "1 vs 2 torch threads"
    differences = benchmark.pedantic(lambda: {"distilled set": largest_difference(distilled),
                                              "evaluation model": largest_difference(evaluation_model)},
                                     rounds=1, iterations=1)
    benchmark.extra_info.update(differences)
    print("\nlargest difference, 1 vs 2 threads:", differences)
