"""Cores by policy (vlbench/parallel.py): independent units on worker processes give the very numbers
they give one after another, whatever the workers and the process's torch threads."""
import os

import pytest
import torch
from torch import nn

from vlbench.api import Pairs
from vlbench.cli import main
from vlbench.core import RunSpec, TrainProtocol, VLBenchError
from vlbench.data.synthscenes import generate
from vlbench.modules import DualEncoder
from vlbench.parallel import Pool, jobs, one_thread, pool_workers, set_jobs, share
from vlbench.runner import run
from vlbench.sweep.executors import make_executor
from vlbench.text_encoders import BertCLSEncoder
from vlbench.tm import ExpertBuffer, ExpertSpec

from test_distill import tiny_model, tiny_pairs
from tiny_models import WORDS, write_tiny_bert


def test_cores_come_from_the_one_knob_and_are_shared_between_a_sweeps_workers(monkeypatch):
    monkeypatch.delenv("VLBENCH_JOBS", raising=False)
    assert jobs() == len(os.sched_getaffinity(0))
    set_jobs(4)
    assert (jobs(), share(2), share(3), share(8)) == (4, 2, 1, 1)
    assert (pool_workers(5), pool_workers(2), pool_workers(5, "cuda")) == (4, 2, 1)
    monkeypatch.setenv("VLBENCH_JOBS", "two")
    with pytest.raises(VLBenchError, match="VLBENCH_JOBS must be a positive number"):
        jobs()
    with pytest.raises(VLBenchError, match="--jobs must be a positive number"):
        set_jobs(0)


def test_a_tunes_or_sweeps_local_workers_each_get_an_equal_share_of_its_cores(tmp_path, monkeypatch):
    """`vlbench tune --jobs 4 --workers 2` (and a sweep's, same executor): each trial's process reads 2 cores."""
    monkeypatch.delenv("VLBENCH_JOBS", raising=False)
    monkeypatch.chdir(tmp_path)  # the dry run looks for its study under results/
    assert main(["tune", "--condenser", "forgetting", "--budget", "10", "--jobs", "4", "--dry-run"]) == 0
    assert jobs() == 4
    pool = make_executor("local", workers=2, default_log_dir=tmp_path)
    assert [cores for _, cores in pool.map(worker_jobs, [0, 1, 2])] == [2, 2, 2]


def worker_jobs(_) -> int:
    return jobs()


def test_one_thread_restores_the_setting():
    threads = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads


def threads(_) -> int:
    return torch.get_num_threads()


def test_every_unit_runs_on_one_thread_in_this_process_or_in_a_worker():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert [t for _, t in Pool(1).map(threads, [0, 1])] == [1, 1]
        assert [t for _, t in Pool(2).map(threads, [0, 1, 2])] == [1, 1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_evaluation_models_score_the_same_on_one_and_two_workers(vlbench_cache, tmp_path, monkeypatch):
    generate(tmp_path / "data", 0, train=40, val=0, test=20, pretrain=0)
    spec = RunSpec("random", 20, data_root=str(tmp_path / "data"), evals=2, backbone_options={"pretrained": None},
                   protocol=TrainProtocol(steps=30, batch_size=16))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # this process's setting must not reach the numbers
    try:
        monkeypatch.setenv("VLBENCH_JOBS", "1")
        alone = run(spec, tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("VLBENCH_JOBS", "2")
    pooled = run(spec, tmp_path / "two", progress=False)
    assert (alone["workers"], pooled["workers"], alone["torch_threads"]) == (1, 2, 1)
    assert pooled["metrics"]["per_seed"] == alone["metrics"]["per_seed"]
    assert alone["metrics"]["per_seed"][0] != alone["metrics"]["per_seed"][1]  # two models, each in its place


def live_model(seed: int) -> DualEncoder:
    """tiny_model with the tiny BERT's 16-d text."""
    torch.manual_seed(seed)
    return DualEncoder(nn.Sequential(nn.Flatten(), nn.Linear(48, 8)), image_dim=8, text_dim=16, embed_dim=5)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["cached", "live"])
def test_expert_trajectories_are_the_same_on_one_and_two_workers(text, tmp_path, monkeypatch):
    spec = ExpertSpec(epochs=2, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=8, text=text)
    encoder, pairs, make_model = None, tiny_pairs(), tiny_model
    if text == "live":  # text recomputed every batch by a BERT in train mode: its dropout drawn in the worker
        encoder = BertCLSEncoder(str(write_tiny_bert(tmp_path / "bert")))
        captions = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(4)) for i in range(len(pairs))]
        pairs = Pairs(pairs.images, pairs.pair_image, encoder.encode(captions), captions)
        make_model = live_model
    built = {}
    for workers in (1, 2):
        monkeypatch.setenv("VLBENCH_JOBS", str(workers))
        built[workers] = ExpertBuffer(tmp_path / str(workers), spec).build(2, make_model, pairs,
                                                                           text_encoder=encoder)
    for one, two in zip(built[1], built[2]):
        assert len(one) == len(two) == 3
        for a, b in zip(one, two):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = built[1][0][2], built[1][1][2]
    assert any(not torch.equal(last[0][k], last[1][k]) for k in last[0])  # two experts, each in its place
