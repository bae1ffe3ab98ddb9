"""The condensed set's cache: runs that share one set (its evaluation backbones, run in parallel)
condense it once, under its lock; the others wait and reuse it."""
import threading
import time

from vlbench.core import RunSpec
from vlbench_plugins.random_subset import RandomPairs


class HeldRandom(RandomPairs):
    """`random`, counting its condenses and holding the first open until `release` is set."""

    calls = 0
    started, release = threading.Event(), threading.Event()

    def condense(self, ctx):
        type(self).calls += 1
        self.started.set()
        assert self.release.wait(60)
        return super().condense(ctx)


def test_runs_sharing_a_set_condense_it_once_the_second_waits_and_reuses(tmp_path, monkeypatch):
    from vlbench.condensing import condensed_set
    from vlbench.data.synthscenes import generate
    from vlbench.runner import Run

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    generate(tmp_path / "data", seed=0, train=24, val=0, test=12, pretrain=0)
    options = dict(condenser="random", budget=6, data_root=str(tmp_path / "data"), device="cpu",
                   backbone_options={"pretrained": None})
    runs = [Run(RunSpec(**options)),
            Run(RunSpec(**options, eval_backbone="convnet-minilm", eval_backbone_options={"pretrained": None}))]
    assert runs[0].condense_key == runs[1].condense_key and runs[0].run_key != runs[1].run_key
    for run in runs:
        run.condenser = HeldRandom()
    train = runs[0].load_pairs()[0]
    got = [None, None]

    def condense(i):
        got[i] = condensed_set(runs[i], train)

    first = threading.Thread(target=condense, args=(0,))
    first.start()
    assert HeldRandom.started.wait(60)  # the first run is condensing, inside the set's lock
    second = threading.Thread(target=condense, args=(1,))
    second.start()
    time.sleep(0.5)  # time enough to reach the set: it must be waiting for the lock, not condensing too
    HeldRandom.release.set()
    first.join(60), second.join(60)
    (set0, path0, cached0), (set1, path1, cached1) = got
    assert HeldRandom.calls == 1
    assert (cached0, cached1) == (False, True) and path0 == path1
    assert set0.source_indices.tolist() == set1.source_indices.tolist()


def test_the_context_checks_its_budget_against_its_training_pairs():
    from pathlib import Path

    import pytest
    import torch

    from vlbench.api import CondenseContext, ImageTextDataset, Pairs, TrainProtocol, VLBenchError

    pairs = Pairs(torch.zeros(3, 3, 4, 4), torch.arange(3), torch.zeros(3, 8), ["a", "b", "c"])
    ctx = CondenseContext(dataset=ImageTextDataset("d", Path("."), {}, "fp"), train=pairs, backbone=None, budget=3,
                          seed=0, device=torch.device("cpu"), protocol=TrainProtocol(), work_dir=Path("unused"))
    ctx.check_budget()  # every pair
    for budget in (0, 4):
        ctx.budget = budget
        with pytest.raises(VLBenchError, match=f"between 1 and the 3 training pairs, got {budget}"):
            ctx.check_budget()


def test_a_set_is_keyed_by_the_versions_of_the_stages_it_was_made_from(tmp_path, monkeypatch):
    # herding's sets were reused after the reference model's builder changed (reference_model 1 -> 2), because
    # the set's key named the condenser's code and not the reference model's.
    import dataclasses

    from vlbench.data.synthscenes import generate
    from vlbench.runner import Run
    from vlbench.stages import ReferenceModel

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    generate(tmp_path / "data", seed=0, train=24, val=0, test=12, pretrain=0)

    def key(condenser: str, version: int) -> str:
        monkeypatch.setattr(ReferenceModel, "code_version", dataclasses.replace(ReferenceModel.code_version, number=version))
        return Run(RunSpec(condenser=condenser, budget=6, data_root=str(tmp_path / "data"))).condense_key

    assert key("herding", 2) != key("herding", 3) != key("herding", 1)
    assert key("random", 2) == key("random", 3)  # random uses no reference model
