"""The meta-gradient's memory and time by `syn_steps`: the full unroll vs TESLA's constant-memory
recomputation (`unroll: tesla`), side by side; tm-lora on the default tiny ViT at random init, 100
synthetic pairs, batch 100, the default inner loop (protocol SGD: lr 0.01, momentum 0.9, weight
decay 5e-4); a fabricated target (the start + noise), so only the costs are meaningful.

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_unroll_memory.py --benchmark-columns=min,mean,rounds

Peak memory is the largest number of bytes that tensors saved for backward hold at one time during
an untimed iteration (`vlbench.tm.SavedTensorMemory`: a saved_tensors_hooks count, since torch
keeps no allocator statistics on CPU); it is the part of the memory that grows with syn_steps.
The untimed iteration's process CPU time is saved too (less sensitive to a loaded machine than
the wall time). At 8 and 16 steps the TESLA rows also record the cosine similarity of their meta-gradient
(pixels, text) to the full unroll's at the same draw.
"""
import dataclasses
import math
import time

import pytest
import torch
from test_distill_iteration import make_distiller
from torch.nn.functional import cosine_similarity

from vlbench.tm import SavedTensorMemory

STEPS = [8, 16, 32, 64]


def meta_gradient(distiller) -> list[torch.Tensor]:
    loss = sum(distiller.matching(distiller.iteration).values())
    return list(torch.autograd.grad(loss, (distiller.images, distiller.text)))


@pytest.mark.parametrize("unroll", ["full", "tesla"])
@pytest.mark.parametrize("syn_steps", STEPS)
def test_unroll(benchmark, syn_steps, unroll, tmp_path):
    torch.set_num_threads(1)
    distiller, bounds = make_distiller("tm-lora", syn_steps, tmp_path)
    distiller.config = dataclasses.replace(distiller.config, unroll=unroll)
    distiller.weight_decay, distiller.inner_momentum = 5e-4, 0.9  # tm-lora's default inner loop: protocol SGD
    with torch.no_grad():
        distiller.lr_param.fill_(math.log(0.01))
    benchmark.group = f"one tm-lora iteration, syn_steps {syn_steps}"
    if unroll == "tesla" and syn_steps <= 16:
        tesla = meta_gradient(distiller)
        distiller.config = dataclasses.replace(distiller.config, unroll="full")
        full = meta_gradient(distiller)
        distiller.config = dataclasses.replace(distiller.config, unroll="tesla")
        benchmark.extra_info["cosine_to_full"] = [round(cosine_similarity(a.flatten(), b.flatten(), dim=0).item(), 4)
                                                  for a, b in zip(tesla, full)]
    cpu = time.process_time()
    with SavedTensorMemory() as memory:  # a first, untimed iteration
        distiller.step(bounds)
    benchmark.extra_info["cpu_s_untimed"] = round(time.process_time() - cpu, 2)
    benchmark.extra_info["peak_graph_mib"] = round(memory.peak / 2**20, 1)
    benchmark.extra_info["saved_total_mib"] = round(memory.total / 2**20, 1)
    benchmark.pedantic(distiller.step, args=(bounds,), rounds=2, iterations=1)
    assert len(distiller.history) == 3
