"""End-to-end `vlbench run` on a small slice of the embedded data, and its one-line errors."""
import json
import os

import pytest

from vlbench.cli import main
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
    assert record["budget"] == 12 and record["seeds"] == [0, 1]
    assert record["condenser"] == {"name": "random", "distribution": "vlbench", "version": "0.1.0", "config": {}}
    assert record["dataset"]["fingerprint"] and record["protocol"]["steps"] == 20
    assert len(record["metrics"]["per_seed"]) == 2
    assert 0 <= record["metrics"]["mean"]["mean"] <= 100
    assert set(record["stages"]) == {"prepare", "condense", "evaluate"}
    assert record["condensed"]["num_pairs"] == 12 and record["condensed"]["learned_lrs"] is None
    assert "torch" in record["packages"]

    # Same spec again: the condensed set is reused, not recomputed.
    assert main(["run", "--condenser", "random", "--budget", "12", "--config", str(config), "--results", str(results)]) == 0
    (second,) = [r for r in records(results) if r["run_id"] != record["run_id"]]  # ids, not names, tell them apart
    assert second["stages"]["condense"]["cached"] is True
    capsys.readouterr()

    assert main(["leaderboard", "--results", str(results)]) == 0
    board = (results / "LEADERBOARD.md").read_text()
    assert "| random 0.1.0" in board and "synthscenes" in board


def test_full_reference_trains_on_every_training_pair(env):
    base, config = env
    results = base / "full-results"
    assert main(["run", "--condenser", "full", "--config", str(config), "--results", str(results)]) == 0
    (record,) = records(results)
    assert record["budget"] == 300  # 60 images x 5 captions


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
    bad.write_text("protocol: [unclosed\n")
    assert main(["run", "--condenser", "random", "--budget", "5", "--config", str(bad)]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["run", "--condenser", "random", "--budget", "5", "--config", str(tmp_path / "missing.yaml")]) == 2
