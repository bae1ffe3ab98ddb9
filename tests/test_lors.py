"""`lors` (plugins/lors.py): tm-lora plus learned low-rank similarity targets, on the engine."""
from __future__ import annotations

import pytest
import torch
from test_distill import killed_at

from vlbench.api import LowRankTargets, VLBenchError
from vlbench.testing import check_condenser, make_context
from vlbench.tm import derived_seed

TINY = {"iterations": 4, "syn_steps": 3, "num_experts": 1, "train_epochs": 2, "checkpoint_every": 2}


def condense(name: str, work_dir, **options):
    from vlbench.plugins import Registry

    ctx = make_context(work_dir, budget=10)
    return Registry().get("condenser", name)(**TINY, **options).condense(ctx)


@pytest.mark.parametrize("unroll", ["full", "tesla"])
def test_lors_at_similarity_lr_0_is_tm_lora_bit_for_bit(vlbench_cache, tmp_path, unroll):
    lors = condense("lors", tmp_path / "lors", lr_sim=0.0, unroll=unroll, target_loss="cross_entropy")
    tm_lora = condense("tm-lora", tmp_path / "tm-lora", unroll=unroll)
    assert torch.equal(lors.images, tm_lora.images) and torch.equal(lors.text_features, tm_lora.text_features)
    assert torch.equal(lors.dense_targets(), torch.eye(10))  # S never left the identity
    assert lors.meta["matching_loss_last"] == tm_lora.meta["matching_loss_last"]


def test_the_similarity_factors_get_gradients_and_learn(vlbench_cache, tmp_path):
    from vlbench_plugins.lors import LoRS

    c, ctx = LoRS(**TINY, target_loss="cross_entropy"), make_context(tmp_path, budget=10)
    setup = c.setup(ctx)
    d = c.distiller(ctx, setup)
    sum(d.matching(0).values()).backward()
    grads = {k: x.tensor.grad for k, x in d.learnables.items()}
    assert grads["right"].abs().sum() > 0
    # At S = I, L gets nothing (R = 0) and neither does the diagonal (each row of S is normalised, and
    # the diagonal is a row's only weight): both move once R has.
    assert torch.equal(grads["left"], torch.zeros(10, 10)) and torch.equal(grads["diagonal"], torch.zeros(10))

    learned = c.condense(make_context(tmp_path / "run", budget=10)).soft_targets
    scale = c.config.sim_alpha / c.config.sim_rank
    left0 = torch.randn(10, 10, generator=torch.Generator().manual_seed(derived_seed("lors", 0))) * scale
    assert isinstance(learned, LowRankTargets) and learned.left.shape == (10, c.config.sim_rank)
    assert learned.right.abs().sum() > 0 and not torch.equal(learned.diagonal, torch.ones(10))
    assert not torch.equal(learned.left, left0)  # all three factors moved


def test_the_inner_loss_reads_the_stored_targets(vlbench_cache, tmp_path):
    """What the inner loop trains against is the sub-matrix that evaluation will take from the stored set."""
    from vlbench_plugins.lors import LoRS

    c, ctx = LoRS(**TINY), make_context(tmp_path, budget=10)
    setup = c.setup(ctx)
    d = c.distiller(ctx, setup)
    with torch.no_grad():
        for x in d.learnables.values():
            x.tensor.add_(0.1 * torch.randn(x.tensor.shape, generator=torch.Generator().manual_seed(1)))
    stored = c.result(ctx, setup, d).dense_targets()
    idx = torch.tensor([7, 2, 5])
    assert torch.allclose(c.targets(d.learnables, idx).dense(), stored[idx][:, idx], atol=1e-6)


def test_wbce_lors_reads_s_per_entry_and_its_set_says_so(vlbench_cache, tmp_path):
    """Under LoRS's WBCE each entry is its own target, so at S = I the diagonal already gets a gradient
    (under cross-entropy it gets exactly none, above); the set records the loss for evaluation."""
    from vlbench_plugins.lors import LoRS

    c, ctx = LoRS(**TINY), make_context(tmp_path, budget=10)  # the default: wbce
    setup = c.setup(ctx)
    d = c.distiller(ctx, setup)
    sum(d.matching(0).values()).backward()
    assert d.learnables["diagonal"].tensor.grad.abs().sum() > 0
    assert c.result(ctx, setup, d).target_loss == "wbce"
    with pytest.raises(VLBenchError, match="target_loss must be one of cross_entropy, wbce, got 'kl'"):
        LoRS(target_loss="kl")


def test_lors_conforms(vlbench_cache):
    from vlbench_plugins.lors import LoRS

    report = check_condenser(LoRS, budget=10, options=TINY)
    assert report.condensed.extra_bytes == 4 * (2 * 10 * 10 + 10)  # two (N, r) factors + the diagonal, no lrs


def test_lors_resumes_its_factors_after_a_kill(vlbench_cache, tmp_path, monkeypatch):
    from vlbench_plugins.lors import LoRS

    options = {**TINY, "iterations": 6}
    whole = LoRS(**options).condense(make_context(tmp_path / "whole", budget=10))

    with killed_at(monkeypatch, 5):
        LoRS(**options).condense(make_context(tmp_path / "killed", budget=10))
    resumed = LoRS(**options).condense(make_context(tmp_path / "killed", budget=10))  # same work_dir: resumes
    assert all(torch.equal(a, b) for a, b in zip(resumed.target_tensors().values(), whole.target_tensors().values()))
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.text_features, whole.text_features)
