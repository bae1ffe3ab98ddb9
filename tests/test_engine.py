"""The open engine: a method's own learnable tensors in the Distiller (optimiser group, clipping,
finiteness check, rollback, checkpoint/resume) and the ~40-line example of docs/distillation.md."""
from __future__ import annotations

import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from test_distill import bounds_for, killed_at, tiny_model, tiny_pairs, trajectories  # noqa: F401 (fixture)

from vlbench.api import VLBenchError
from vlbench.tm import DistillConfig, Distiller, Learnable, Student
from vlbench.train import soft_clip_loss

DOCS = Path(__file__).parents[1] / "docs" / "distillation.md"


def soft_target_distiller(trajectories, state_path: Path, lr_sim: float = 0.5, **overrides) -> tuple[Distiller, dict]:
    """The tiny problem of test_distill with a learned dense (6, 6) target matrix read by the inner loss."""
    images, text = tiny_pairs().select(torch.arange(6))
    targets = torch.eye(6, requires_grad=True)

    def soft(image_emb, text_emb, temperature, indices):
        return soft_clip_loss(image_emb, text_emb, temperature, targets[indices][:, indices])

    config = DistillConfig(**{"iterations": 6, "syn_steps": 3, "batch_syn": 4, "lr_img": 1.0, "lr_txt": 1.0,
                              "lr_init": 0.5, "learn_lrs": True, "checkpoint_every": 2, **overrides})
    d = Distiller(Student(tiny_model()), trajectories, images, text, config, seed=0, state_path=state_path,
                  weight_decay=5e-4, learnables={"targets": Learnable(targets, lr_sim)}, loss=soft)
    return d, {"targets": targets, "bounds": bounds_for(text)}


@pytest.mark.parametrize("unroll", ["full", "tesla"])
def test_a_learnable_gets_its_meta_gradient_and_its_own_group(trajectories, tmp_path, unroll):  # noqa: F811
    d, t = soft_target_distiller(trajectories, tmp_path / "state.pt", unroll=unroll)
    assert d.optimizer.param_groups[-1]["params"] == [t["targets"]] and d.optimizer.param_groups[-1]["lr"] == 0.5
    before = t["targets"].detach().clone()
    d.step(t["bounds"])
    assert t["targets"].grad.abs().sum() > 0
    assert not torch.equal(t["targets"], before)


def test_tesla_hands_the_learnable_the_full_unrolls_gradient_at_one_step(trajectories, tmp_path):  # noqa: F811
    grads = {}
    for unroll in ("full", "tesla"):
        d, t = soft_target_distiller(trajectories, tmp_path / unroll, syn_steps=1, unroll=unroll)
        sum(d.matching(0).values()).backward()
        grads[unroll] = t["targets"].grad
    assert grads["full"].abs().sum() > 0
    assert torch.allclose(grads["tesla"], grads["full"], rtol=1e-4, atol=1e-7)


def test_a_learnables_gradient_is_clipped_like_the_others(trajectories, tmp_path):  # noqa: F811
    d, t = soft_target_distiller(trajectories, tmp_path / "state.pt", lr_sim=1.0, max_grad_norm=1e-3)
    before = t["targets"].detach().clone()
    d.step(t["bounds"])
    moved = (t["targets"] - before).norm().item()
    assert 0 < moved <= 1e-3 * (1 + 1e-5)  # the first SGD step moves by lr x the clipped gradient


def test_a_non_finite_learnable_gradient_rolls_back(trajectories, tmp_path, caplog):  # noqa: F811
    d, t = soft_target_distiller(trajectories, tmp_path / "state.pt")
    calls = {"n": 0}

    def poison_third_iteration(grad):
        calls["n"] += 1
        return grad * math.nan if calls["n"] == 3 else grad

    t["targets"].register_hook(poison_third_iteration)  # the loss stays finite: only this gradient is not
    d.run(t["bounds"])
    assert [r["iteration"] for r in d.rollbacks] == [2] and d.iteration == 6
    assert d.optimizer.param_groups[-1]["lr"] == 0.25  # halved with the others
    assert torch.isfinite(t["targets"]).all()
    assert "rolled back" in caplog.text  # a warning


def test_learnables_resume_after_a_kill_as_if_uninterrupted(trajectories, tmp_path, monkeypatch):  # noqa: F811
    full, t_full = soft_target_distiller(trajectories, tmp_path / "full.pt")
    full.run(t_full["bounds"])

    first, t_first = soft_target_distiller(trajectories, tmp_path / "killed.pt")
    with killed_at(monkeypatch, 5):
        first.run(t_first["bounds"])
    resumed, t_resumed = soft_target_distiller(trajectories, tmp_path / "killed.pt")
    resumed.run(t_resumed["bounds"])
    assert not torch.equal(t_full["targets"], torch.eye(6))
    assert torch.equal(t_resumed["targets"], t_full["targets"])  # its momentum buffer came back too
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.text, full.text)


def test_learnables_are_checked(trajectories, tmp_path):  # noqa: F811
    images, text = tiny_pairs().select(torch.arange(6))

    def make(learnables, state="state.pt"):
        return Distiller(Student(tiny_model()), trajectories, images, text, DistillConfig(iterations=1), seed=0,
                         state_path=tmp_path / state, learnables=learnables)

    with pytest.raises(VLBenchError, match="leaf tensor that requires grad"):
        make({"w": Learnable(torch.ones(6), 1.0)})
    with pytest.raises(VLBenchError, match="leaf tensor that requires grad"):
        make({"w": Learnable(torch.ones(6, requires_grad=True) * 2, 1.0)})
    plain = make({})
    older = {k: v for k, v in plain.state().items() if k != "learnables"}
    plain.load_state(older)  # a checkpoint from before learnables existed still resumes
    plain.save()  # a plain tm checkpoint is not resumed as a method's with learnables
    with pytest.raises(VLBenchError, match="another method's state"):
        make({"w": Learnable(torch.ones(6, requires_grad=True), 1.0)}).resume()


def docs_example() -> str:
    """The example plugin's code block in docs/distillation.md."""
    blocks = re.findall(r"<!-- example-plugin -->\n```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/distillation.md has one example plugin"
    return blocks[0]


def test_the_docs_example_plugin_is_short_and_conforms(vlbench_cache, monkeypatch):
    from vlbench.testing import check_condenser

    code = docs_example()
    assert len(code.splitlines()) <= 45
    module = types.ModuleType("dense_targets")  # a module of its own, as a plugin's would be
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, str(DOCS), "exec"), module.__dict__)
    options = {"iterations": 3, "syn_steps": 2, "num_experts": 1, "train_epochs": 2, "checkpoint_every": 2}
    report = check_condenser(module.DenseTargets, budget=10, options=options)
    targets = report.condensed.soft_targets
    assert targets.shape == (10, 10) and not torch.equal(targets, torch.eye(10))  # learned, stored, valid
