"""`vlbench reproduce`: a record rerun from its spec in a fresh cache, compared model by model exactly; on a
mismatch, the first stage whose artifact hash differs is named (vlbench/board/reproduce.py)."""
import json
import subprocess

import pytest

from vlbench import condensing
from vlbench.cli import main
from vlbench.core import RunSpec, TrainProtocol
from vlbench.data.synthscenes import generate
from vlbench.board.reproduce import find_record, reproduce
from vlbench.runner import run


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A small data tree and a private cache for the records a test makes."""
    generate(tmp_path / "data", seed=0, train=60, val=0, test=30, pretrain=0)
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    return str(tmp_path / "data")


@pytest.mark.slow
def test_a_record_made_by_a_changed_builder_names_the_stage_that_differs(tiny, tmp_path, monkeypatch):
    spec = RunSpec("herding", 10, data_root=tiny, evals=1, protocol=TrainProtocol(steps=30))
    built = condensing.reference_model
    with monkeypatch.context() as changed:  # the reference model's builder, changed: it trains another seed
        changed.setattr(condensing, "reference_model", lambda run_, pairs, seed: built(run_, pairs, seed + 1))
        record = run(spec, tmp_path / "results", progress=False)
    assert {"data", "images", "text_features", "reference_model", "condensed"} <= set(record["artifacts"])
    assert record["cpu"]["capability"] and record["source"]["code"]["files"] > 0
    comparison = reproduce(record, data_root=tiny, progress=False)
    assert not comparison.matches
    assert comparison.first_difference()[0] == "reference_model"
    assert "first artifact that differs: reference_model" in comparison.summary()
    assert comparison.rerun["artifacts"]["text_features"] == record["artifacts"]["text_features"]


@pytest.mark.slow
def test_at_commit_runs_the_records_own_commit_from_a_worktree(tiny, tmp_path):
    spec = RunSpec("random", 10, data_root=tiny, evals=1, protocol=TrainProtocol(steps=10))
    record = run(spec, tmp_path / "results", progress=False)
    commit = record["source"]["commit"]
    comparison = reproduce(record, data_root=tiny, at_commit=True, results=tmp_path / "rerun", progress=False)
    assert comparison.rerun["source"]["commit"] == commit
    assert comparison.matches, comparison.summary()  # the random path is the same at HEAD and in this checkout
    worktrees = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, check=True).stdout
    assert "vlbench-reproduce-" not in worktrees  # the temporary worktree is gone


def test_eval_trace_retrains_one_model_of_a_record_exactly(tiny, tmp_path, script, capsys):
    """scripts/eval_trace.py: the traced model ends at the record's number (the probes do not change its training)."""
    record = run(RunSpec("random", 10, data_root=tiny, evals=2, protocol=TrainProtocol(steps=30)), tmp_path / "results",
                 progress=False)
    path = tmp_path / "results" / "records" / f"{record.run_id}.json"
    script("eval_trace").main([str(path), "--model", "2", "--every", "10", "--data-root", tiny, "--lr", "0.03", "0.3"])
    first, second, other, _ = capsys.readouterr().out.splitlines()
    assert first.startswith("lr 0.03: probe loss every 10 steps") and len(first.split("steps")[1].split()) == 4
    assert "(the record's, exactly)" in second and f"{record['metrics']['per_seed'][1]['mean']:.2f}" in second
    assert other.startswith("lr 0.3: probe loss")


def test_bad_records_are_one_line_errors(golden, tmp_path, capsys):
    assert main(["reproduce", "no-such-run"]) == 2
    assert "no record 'no-such-run': give a record file, or the run id" in capsys.readouterr().err
    (tmp_path / "empty.json").write_text("{}")
    assert main(["reproduce", str(tmp_path / "empty.json")]) == 2
    assert "is not a run record with spec and metrics" in capsys.readouterr().err
    record = dict(golden.committed()["random"])
    for source, error in (({"commit": None, "dirty": None}, "names no commit"),
                          ({"commit": "0" * 40, "dirty": False}, "cannot check out commit 000000000000")):
        (tmp_path / "r.json").write_text(json.dumps({**record, "source": source}))
        assert main(["reproduce", str(tmp_path / "r.json"), "--at-commit"]) == 2
        err = capsys.readouterr().err
        assert error in err and len(err.strip().splitlines()) == 1


def test_a_record_is_found_by_its_run_id(golden, monkeypatch):
    monkeypatch.chdir(golden.GOLDEN.parent.parent)
    record = golden.committed()["random"]
    found, path = find_record(record.run_id)
    assert found.run_id == record.run_id and path.name == f"{record.run_id}.json"


def test_the_board_script_reruns_the_newest_seed_0_record_of_every_row(script):
    rows = script("reproduce_board").seed_zero_rows()
    assert rows["random@100"].run_id == "da0a1c07-20261130T024201Z-deeeaad9"
    assert rows["tm-lora@100"].run_id == "092b48bb-20261207T142637Z-aa03d24b"  # the tuned row (the v2 one is archived)
    # a tuned row goes by its condenser alone, an ablation of it by the options it changes
    assert rows["tm@100"]["spec"]["tuned"] and "lors@500 lr_sim=0.0" in rows and "full@40000" in rows
    # another table's row is its own, named by its table (the emoji board's random@100 took the place of
    # synthscenes' when rows went by condenser and budget alone)
    assert rows["emoji/tinyvit-minilm-f708a675:random@100"].run_id == "7ade8747-20261207T194954Z-24a64a9e"
    assert all(r["spec"]["seed"] == 0 and r["split"] == "test" for r in rows.values())
