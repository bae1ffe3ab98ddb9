"""One distillation iteration (unrolled inner loop + meta-gradient + update) on the default tiny ViT.

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_distill_iteration.py --benchmark-columns=min,mean,max -s

- `test_distillation_iteration`: `tm` vs `tm-lora` at syn_steps 4, 8 and 16; 100 synthetic pairs, batch 100.
  Memory is the bytes the autograd graph holds (saved tensors, counted by a hook during one untimed
  iteration), the part that grows with syn_steps; it lands in the benchmark's extra_info.
- `test_where_a_tm_lora_iteration_spends_its_time`: torch.profiler over one iteration as the committed
  tm-lora records run it (shipped pretrained ViT, 100 pairs, 10 inner steps, the evaluation's SGD
  inside), by phase (the `tm.*` record_function labels of vlbench.tm) and by kind of op.
- `test_folding_the_lora_scale`: the speed-up of `Student`'s folded LoRA scale over peft's forward, as a
  ratio of process CPU times within this one process (rounds alternate), and the two sets bitwise equal.

Random pixels and text and a fabricated trajectory: timing does not depend on them.
docs/benchmarks.md ("Where a tm-lora iteration spends its time") has the numbers.
"""
import re
import statistics
import time
from collections import defaultdict

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from vlbench.tm import Bounds, DistillConfig, Distiller, Student

N, DIM = 100, 384


class GraphMemory:
    """Bytes of tensors saved for backward while active: the unrolled graph, held until the meta-backward."""

    def __init__(self):
        self.bytes = 0

    def pack(self, t):
        self.bytes += t.numel() * t.element_size()
        return t

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


def make_distiller(mode: str, syn_steps: int, tmp_path, pretrained: str | None = None, pairs: int = N,
                   fold_lora_scale: bool = True, inner_sgd: tuple[float, float] = (0.0, 0.0)) -> tuple[Distiller, Bounds]:
    """A distiller on the default backbone; `inner_sgd`: the inner loop's (weight decay, momentum)."""
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

    backbone = TinyViTMiniLM(pretrained=pretrained)
    model = (backbone.full_finetuning() if mode == "tm" else backbone).build(0)
    start = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    g = torch.Generator().manual_seed(0)
    target = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    images, text = torch.randn(pairs, 3, 36, 36, generator=g).clamp(-1, 1), torch.randn(pairs, DIM, generator=g)
    config = DistillConfig(iterations=1, syn_steps=syn_steps, max_start_epoch=0, batch_syn=N)
    distiller = Distiller(Student(model, fold_lora_scale), [[start, target]], images, text, config, 0,
                          tmp_path / f"state-{fold_lora_scale}.pt", *inner_sgd)
    return distiller, Bounds(torch.tensor(-1.0), torch.tensor(1.0), text.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("syn_steps", [4, 8, 16])
@pytest.mark.parametrize("mode", ["tm", "tm-lora"])
def test_distillation_iteration(benchmark, mode, syn_steps, tmp_path):
    torch.set_num_threads(1)
    distiller, bounds = make_distiller(mode, syn_steps, tmp_path)
    benchmark.group = "one distillation iteration, 100 pairs, default tiny ViT"
    benchmark.extra_info["matched_parameters"] = sum(p.numel() for p in distiller.student.model.trainable_parameters().values())
    with GraphMemory() as memory:  # a first, untimed iteration: the graph's size
        distiller.step(bounds)
    benchmark.extra_info["graph_memory_mib"] = round(memory.bytes / 2**20, 1)
    steps = len(distiller.history)
    benchmark.pedantic(distiller.step, args=(bounds,), rounds=2, iterations=1)
    assert len(distiller.history) > steps  # 2 rounds timed, 1 under --benchmark-disable


RECORDS = {"pretrained": "auto", "inner_sgd": (5e-4, 0.9)}  # as the committed tm-lora rows distil (protocol v2)

#: Kinds of op, first match wins (aten names; a LoRA matmul has the rank, 4, as a dimension).
KINDS = [
    ("LoRA matmuls (rank 4)", lambda name, shapes: name in ("aten::mm", "aten::addmm") and 4 in shapes),
    ("other matmuls (linear layers)", lambda name, shapes: name in ("aten::mm", "aten::addmm")),
    ("attention (sdpa MATH: bmm, softmax)", lambda name, shapes: re.search(r"bmm|softmax", name)),
    ("patch-embedding convolution", lambda name, shapes: "convolution" in name),
    ("GELU and its derivatives", lambda name, shapes: "gelu" in name),
    ("LayerNorm and its derivatives", lambda name, shapes: "layer_norm" in name),
    ("elementwise arithmetic", lambda name, shapes: re.fullmatch(r"aten::(mul|add|sub|div|neg|exp|sum|pow|sqrt|rsqrt|"
                                                                  r"where|clamp|norm|linalg_vector_norm)_?", name)),
    ("copies (copy_, cat, clone, index)", lambda name, shapes: re.search(r"copy|cat|clone|index|gather|scatter", name)),
    ("between ops (tm.* labels' self time)", lambda name, shapes: name.startswith("tm.")),
    ("autograd engine (node bookkeeping)", lambda name, shapes: not name.startswith("aten::")),
    ("other aten ops (views, allocation, ...)", lambda name, shapes: True),
]
PHASES = ["tm.unroll", "tm.inner_forward", "tm.inner_backward", "tm.inner_update", "tm.meta_backward", "tm.outer_update"]


def test_where_a_tm_lora_iteration_spends_its_time(tmp_path):
    torch.set_num_threads(1)
    distiller, bounds = make_distiller("tm-lora", 10, tmp_path, **RECORDS)
    distiller.step(bounds)  # warm-up
    cpu = time.process_time()
    distiller.step(bounds)
    cpu = time.process_time() - cpu
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        distiller.step(bounds)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    phases = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in PHASES}
    kinds = defaultdict(float)
    for e in events:
        shapes = {d for shape in e.input_shapes for d in (shape if isinstance(shape, list) else [])}
        kinds[next(kind for kind, match in KINDS if match(e.key, shapes))] += e.self_cpu_time_total
    # the same iteration on 2 pairs: nearly no arithmetic, the per-op cost of Python, dispatch and autograd
    small, small_bounds = make_distiller("tm-lora", 10, tmp_path / "small", pairs=2, **RECORDS)
    small.step(small_bounds)
    small_cpu = time.process_time()
    small.step(small_bounds)
    small_cpu = time.process_time() - small_cpu
    print(f"\none tm-lora iteration: {cpu:.2f} s process CPU time (unprofiled); profiled: {total / 1e6:.2f} s of op time, "
          f"{sum(e.count for e in prof.key_averages() if e.key.startswith('aten::'))} aten ops")
    print("phase                 share of the iteration")
    for name in PHASES:
        print(f"  {name:20s} {100 * phases.get(name, 0) / total:5.1f}%")
    print("kind of op (self time)                    share")
    for kind, _ in KINDS:
        print(f"  {kind:40s} {100 * kinds[kind] / total:5.1f}%")
    print("largest aten ops by self time (name, input shapes, calls)")
    for e in sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:6]:
        print(f"  {100 * e.self_cpu_time_total / total:5.1f}%  {e.key} {e.input_shapes[:3]} x{e.count}")
    print(f"the same iteration on 2 pairs: {small_cpu:.2f} s ({100 * small_cpu / cpu:.0f}% of 100 pairs)")
    assert phases["tm.meta_backward"] > phases["tm.inner_forward"] > 0


def test_folding_the_lora_scale(tmp_path):
    torch.set_num_threads(1)
    runs = {fold: make_distiller("tm-lora", 10, tmp_path, fold_lora_scale=fold, **RECORDS) for fold in (False, True)}
    seconds = {fold: [] for fold in runs}
    for round_ in range(6):  # alternating, the first round a warm-up
        for fold, (distiller, bounds) in runs.items():
            cpu = time.process_time()
            distiller.step(bounds)
            if round_:
                seconds[fold].append(time.process_time() - cpu)
    peft_forward, folded = (statistics.median(seconds[fold]) for fold in (False, True))
    print(f"\nprocess CPU s per iteration, median of 5: peft's forward {peft_forward:.3f}, folded scale {folded:.3f}: "
          f"{peft_forward / folded:.3f}x")
    (a, _), (b, _) = runs.values()
    assert torch.equal(a.images, b.images) and torch.equal(a.text, b.text) and a.history == b.history
