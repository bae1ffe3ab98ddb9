"""One distillation iteration (unrolled inner loop + meta-gradient + update): `tm` vs `tm-lora` on the
default tiny ViT, at syn_steps 4, 8 and 16; 100 synthetic pairs, batch 100.

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_distill_iteration.py --benchmark-columns=min,mean,max

Memory is the bytes the autograd graph holds (saved tensors, counted by a hook during one untimed
iteration), the part that grows with syn_steps; it lands in the benchmark's extra_info.
Random weights and a fabricated two-checkpoint trajectory: timing does not depend on them.
"""
import pytest
import torch

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


def make_distiller(mode: str, syn_steps: int, tmp_path) -> tuple[Distiller, Bounds]:
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

    backbone = TinyViTMiniLM(pretrained=None)
    model = (backbone.full_finetuning() if mode == "tm" else backbone).build(0)
    start = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    g = torch.Generator().manual_seed(0)
    target = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    images, text = torch.randn(N, 3, 36, 36, generator=g).clamp(-1, 1), torch.randn(N, DIM, generator=g)
    config = DistillConfig(iterations=1, syn_steps=syn_steps, max_start_epoch=0, batch_syn=N)
    distiller = Distiller(Student(model), [[start, target]], images, text, config, 0, tmp_path / "state.pt", progress=False)
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
    benchmark.pedantic(distiller.step, args=(bounds,), rounds=2, iterations=1)
    assert len(distiller.history) == 3
