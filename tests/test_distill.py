"""Trajectory matching: the unrolled gradient, the matching loss, resume, NaN rollback, LoRA mode, e2e."""
from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from vlbench.api import Pairs, VLBenchError
from vlbench.modules import DualEncoder
from vlbench.tm import (
    Bounds,
    DistillConfig,
    Distiller,
    ExpertBuffer,
    ExpertSpec,
    Student,
    inner,
    matching_loss,
)
from vlbench.tm.experts import noise_floor
from vlbench.tm.lora_fold import FoldedLoRALinear

SPEC = ExpertSpec(epochs=3, lr=0.5, momentum=0.0, weight_decay=5e-4, batch_size=8)


def tiny_model(seed: int = 0, dtype=torch.float32) -> DualEncoder:
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8))
    return DualEncoder(encoder, image_dim=8, text_dim=6, embed_dim=5).to(dtype)


def tiny_pairs(n_images: int = 16) -> Pairs:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n_images, 3, 4, 4, generator=g)
    pair_image = torch.arange(2 * n_images) % n_images
    text = images.flatten(1)[pair_image, :6] + 0.1 * torch.randn(2 * n_images, 6, generator=g)  # learnable pairing
    return Pairs(images, pair_image, text, [f"caption {i}" for i in range(2 * n_images)])


def bounds_for(text: torch.Tensor) -> Bounds:
    return Bounds(pixel_low=torch.tensor(-5.0), pixel_high=torch.tensor(5.0), text_norm=text.norm(dim=1, keepdim=True))


@pytest.fixture
def trajectories(vlbench_cache):
    return ExpertBuffer.locate("data", "tiny", SPEC).build(2, tiny_model, tiny_pairs())


def distiller(trajectories, tmp_path, **overrides) -> tuple[Distiller, Bounds]:
    pairs = tiny_pairs()
    images, text = pairs.select(torch.arange(6))
    config = DistillConfig(**{"iterations": 6, "syn_steps": 3, "max_start_epoch": 1, "batch_syn": 4, "lr_img": 1.0,
                              "lr_txt": 1.0, "lr_init": 0.5, "learn_lrs": True, "checkpoint_every": 2, **overrides})
    d = Distiller(Student(tiny_model()), trajectories, images, text, config, seed=0, state_path=tmp_path / "state.pt",
                  weight_decay=5e-4)
    return d, bounds_for(text)


def test_unrolled_gradient_matches_finite_differences():
    student = Student(tiny_model(dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    start = [torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3 for p in student.model.trainable_parameters().values()]
    target = [p + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64) for p in start]
    images = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    text = torch.randn(6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    log_lr = torch.tensor([-1.0, -1.5], dtype=torch.float64, requires_grad=True)

    def loss(images, text, log_lr):
        lrs = {"image": log_lr[0].exp(), "text": log_lr[1].exp()}
        final = student.unroll(start, images, text, lrs, 4, 4, torch.Generator().manual_seed(2), weight_decay=0.01)
        return sum(matching_loss(final, start, target, student.sides).values())

    grads = torch.autograd.grad(loss(images, text, log_lr), (images, text, log_lr))
    eps = 1e-6
    for k, (x, grad) in enumerate(zip((images, text, log_lr), grads)):
        direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
        args_plus = [a.detach() + (eps * direction if i == k else 0) for i, a in enumerate((images, text, log_lr))]
        args_minus = [a.detach() - (eps * direction if i == k else 0) for i, a in enumerate((images, text, log_lr))]
        numeric = (loss(*args_plus) - loss(*args_minus)) / (2 * eps)
        assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-9)
        assert grad.abs().sum() > 0


def test_matching_loss_is_zero_at_the_target_and_one_at_the_start():
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    target = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    sides = ["image", "text"]
    assert all(v.item() == 0 for v in matching_loss(target, start, target, sides).values())
    assert all(v.item() == pytest.approx(1) for v in matching_loss(start, start, target, sides).values())


def test_expert_buffer_resumes_and_extends(vlbench_cache):
    pairs = tiny_pairs()
    short = ExpertBuffer.locate("data", "tiny", ExpertSpec(**{**SPEC.__dict__, "epochs": 1})).build(1, tiny_model, pairs)
    buffer = ExpertBuffer.locate("data", "tiny", SPEC)
    assert buffer.directory == ExpertBuffer.locate("data", "tiny", ExpertSpec(**{**SPEC.__dict__, "epochs": 1})).directory
    extended = buffer.build(1, tiny_model, pairs)
    assert len(short[0]) == 2 and len(extended[0]) == 4
    for k in extended[0][1]:
        assert torch.equal(short[0][1][k], extended[0][1][k])
    other = ExpertBuffer(vlbench_cache / "other", SPEC).build(1, tiny_model, pairs)  # uninterrupted
    assert all(torch.equal(other[0][3][k], extended[0][3][k]) for k in other[0][3])
    assert buffer.manifest()["bytes_per_trajectory"] == 4 * buffer.manifest()["bytes_per_checkpoint"]
    floor = noise_floor(extended[0], tiny_model(), pairs, SPEC, start_epoch=0, expert_epochs=1)
    assert set(floor) == {"image", "text"} and all(0 < v < 2 for v in floor.values())


@contextmanager
def killed_at(monkeypatch, call: int):
    """The block is killed (KeyboardInterrupt) at its `call`-th matching loss, as by Ctrl-C."""
    real, calls = inner.matching_loss, {"n": 0}

    def killing(*args):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(inner, "matching_loss", killing)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(inner, "matching_loss", real)


def test_resume_after_a_kill_equals_an_uninterrupted_run(trajectories, tmp_path, monkeypatch):
    full, bounds = distiller(trajectories, tmp_path / "full")
    full.run(bounds)
    first, _ = distiller(trajectories, tmp_path / "killed")
    with killed_at(monkeypatch, 5):
        first.run(bounds)
    resumed, _ = distiller(trajectories, tmp_path / "killed")
    resumed.run(bounds)
    assert resumed.iteration == full.iteration == 6
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.text, full.text)
    assert torch.equal(resumed.log_lr, full.log_lr)


def test_a_nan_loss_is_rolled_back_with_halved_learning_rates(trajectories, tmp_path, monkeypatch, caplog):
    real = inner.matching_loss
    calls = {"n": 0}

    def nan_at_third(*args):
        calls["n"] += 1
        out = real(*args)
        return {k: v * math.nan for k, v in out.items()} if calls["n"] == 3 else out

    monkeypatch.setattr(inner, "matching_loss", nan_at_third)
    d, bounds = distiller(trajectories, tmp_path)
    lr_before = d.optimizer.param_groups[0]["lr"]
    d.run(bounds)
    assert d.iteration == 6 and len(d.history) == 6
    assert [r["iteration"] for r in d.rollbacks] == [2]
    assert d.optimizer.param_groups[0]["lr"] == lr_before / 2
    assert torch.isfinite(d.images).all() and torch.isfinite(d.text).all()
    assert "rolled back" in caplog.text  # a warning


def test_persistent_nan_is_an_error_not_a_silent_stop(trajectories, tmp_path, monkeypatch):
    monkeypatch.setattr(inner, "matching_loss", lambda *a: {"image": torch.tensor(math.nan, requires_grad=True)})
    d, bounds = distiller(trajectories, tmp_path)
    with pytest.raises(VLBenchError, match="non-finite"):
        d.run(bounds)


def held_out_matching_loss(d: Distiller) -> float:
    """Mean matching loss over 20 fixed draws (expert, start epoch, batch order) that training never used:
    the same draws before and after, so the comparison is free of the per-iteration sampling noise."""
    return sum(sum(v.item() for v in d.matching(10_000 + i).values()) for i in range(20)) / 20


def test_distillation_lowers_the_matching_loss_and_stays_bounded(trajectories, tmp_path):
    d, bounds = distiller(trajectories, tmp_path, iterations=60, lr_img=3.0, lr_txt=3.0, lr_lr=0.05, checkpoint_every=100)
    before = held_out_matching_loss(d)
    d.run(bounds)
    assert held_out_matching_loss(d) < 0.8 * before
    assert torch.allclose(d.text.norm(dim=1, keepdim=True), bounds.text_norm)
    assert d.images.abs().max() <= 5


def test_lora_mode_matches_only_adapters_and_heads_and_tm_matches_the_encoder():
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM
    from vlbench_plugins.tm import TrajectoryMatching
    from vlbench_plugins.tm_lora import LoRATrajectoryMatching

    backbone = TinyViTMiniLM(pretrained=None, depth=1, width=24, heads=2)
    lora = Student(LoRATrajectoryMatching().variant(backbone).build(0))
    assert any("lora_" in n for n in lora.names)
    assert all("lora_" in n or n.split(".")[0] in ("image_head", "text_head") for n in lora.names)
    full_model = TrajectoryMatching().variant(backbone).build(0)
    full = Student(full_model)
    assert not any("lora_" in n for n in full.names)
    assert any(n.startswith("image_encoder.vit.blocks.0.attn.qkv") for n in full.names)
    with pytest.raises(VLBenchError, match="LoRA"):
        LoRATrajectoryMatching().check_model(full_model)


@pytest.mark.parametrize("momentum, batch", [(0.0, 8), (0.9, 8), (0.9, 3)])  # 3 < 8 pairs: batch order matters
def test_the_inner_loop_trains_exactly_as_the_shared_trainer(momentum, batch):
    from vlbench.api import TrainProtocol
    from vlbench.train import TrainData, train

    pairs = tiny_pairs()
    images, text = pairs.select(torch.arange(8))
    student = Student(tiny_model())
    start = [p.detach().clone() for p in student.model.trainable_parameters().values()]
    lrs = {"image": torch.tensor(0.3), "text": torch.tensor(0.2)}
    final = student.unroll(start, images, text, lrs, 4, batch, torch.Generator().manual_seed(0), weight_decay=0.01, momentum=momentum)
    protocol = TrainProtocol(steps=4, batch_size=batch, weight_decay=0.01, learned_lr_momentum=momentum)
    trained = train(tiny_model(), TrainData.from_condensed(images, text), protocol, seed=0, learned_lrs={"image": 0.3, "text": 0.2})
    for ours, theirs in zip(final, trained.trainable_parameters().values()):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_fixed_lrs_mode_keeps_the_protocol_lr(trajectories, tmp_path):
    d, bounds = distiller(trajectories, tmp_path, learn_lrs=False, lr_init=0.01)
    d.run(bounds)
    assert d.lrs == pytest.approx({"image": 0.01, "text": 0.01})
    assert len(d.optimizer.param_groups) == 2


@pytest.mark.parametrize("name", ["tm", "tm-lora"])
def test_tm_condensers_conform(name, vlbench_cache):
    from vlbench.plugins import Registry
    from vlbench.testing import check_condenser

    options = {"iterations": 3, "syn_steps": 2, "num_experts": 1, "train_epochs": 2, "checkpoint_every": 2}
    report = check_condenser(Registry().get("condenser", name), budget=10, options=options)
    assert report.condensed.meta["matched_parameters"] > 0


def test_a_parameter_outside_the_forward_is_left_alone():
    model = tiny_model()
    model.image_head.unused = nn.Linear(2, 2)  # trainable, never called
    student = Student(model)
    start = [p.detach().clone() for p in model.trainable_parameters().values()]
    pairs = tiny_pairs()
    images, text = pairs.select(torch.arange(8))
    lrs = {"image": torch.tensor(0.3), "text": torch.tensor(0.2)}
    final = student.unroll(start, images, text, lrs, 3, 8, torch.Generator().manual_seed(0), weight_decay=0.01, momentum=0.9)
    for name, before, after in zip(student.names, start, final):
        assert torch.equal(before, after) == ("unused" in name)


@pytest.mark.parametrize("lora_alpha, folds", [(8, True), (6, False)])  # scale 8/4 = 2 folds; 6/4 = 1.5 does not
def test_folding_the_lora_scale_leaves_a_distillation_bitwise_the_same(lora_alpha, folds, tmp_path):
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

    model = TinyViTMiniLM(pretrained=None, depth=2, width=24, heads=2, lora_alpha=lora_alpha).build(0)
    g = torch.Generator().manual_seed(0)
    # peft starts B at zero: start elsewhere, so that the adapters' path carries numbers from the first step
    start = {k: v.detach() + 0.1 * torch.randn(v.shape, generator=g) for k, v in model.trainable_parameters().items()}
    target = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    images, text = torch.randn(8, 3, 36, 36, generator=g).clamp(-1, 1), torch.randn(8, 384, generator=g)
    config = DistillConfig(iterations=3, syn_steps=3, max_start_epoch=0, batch_syn=6)
    runs = []
    for fold in (False, True):
        d = Distiller(Student(model, fold_lora_scale=fold), [[start, target]], images, text, config, seed=0,
                      state_path=tmp_path / f"{fold}.pt", weight_decay=5e-4, inner_momentum=0.9)
        d.run(Bounds(torch.tensor(-1.0), torch.tensor(1.0), text.norm(dim=1, keepdim=True)))
        runs.append(d)
    peft_forward, folded = runs
    assert isinstance(folded.student.forward_model.image_encoder.vit.blocks[0].attn.qkv, FoldedLoRALinear) == folds
    assert not torch.equal(folded.images, images)  # it learned something
    assert torch.equal(folded.images, peft_forward.images) and torch.equal(folded.text, peft_forward.text)
    assert folded.history == peft_forward.history
