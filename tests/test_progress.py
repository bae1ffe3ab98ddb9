"""The run's progress line: its ETA from given stage times and rates, its text, and silence when off."""
import io

import pytest
from tqdm import tqdm

from vlbench.core import RunSpec
from vlbench.board.records import RunRecord
from vlbench.progress import RunProgress, StageTime, eta, expected_stages, format_eta, same_shape, units_left


def test_eta_adds_what_is_left_of_the_current_stage_to_the_stages_after_it():
    # condense expected 100 s, 30 s in (70 s left), its bar says 90 s left: the larger guess wins; evaluate 40 s.
    assert eta([StageTime("condense", 100, elapsed=30, live_left=90), StageTime("evaluate", 40)]) == (130, True)
    assert eta([StageTime("condense", 100, elapsed=30, live_left=10), StageTime("evaluate", 40)]) == (110, True)
    # overdue: nothing negative is counted
    assert eta([StageTime("condense", 100, elapsed=130), StageTime("evaluate", 40)]) == (40, True)


def test_a_stage_of_unknown_length_makes_the_eta_a_lower_bound():
    assert eta([StageTime("condense", None, live_left=20), StageTime("evaluate", 40)]) == (20 + 40, False)
    assert eta([StageTime("condense", 100), StageTime("evaluate", None)]) == (100, False)
    # evaluation's live estimate covers every model left: it is complete without an earlier record
    assert eta([StageTime("evaluate", None, live_left=12, live_is_whole=True)]) == (12, True)


def test_units_left_at_a_rate_includes_the_units_still_to_come():
    assert units_left(40, 100, rate=2.0) == 30
    assert units_left(10, 300, rate=10.0, after=2 * 300) == 89  # model 1 of 3 at step 10, two more of 300 steps
    assert units_left(0, 100, rate=0.0) is None


@pytest.mark.parametrize("seconds, complete, text", [
    (42.4, True, "ETA 42s"), (360, True, "ETA 6m"), (361, False, "ETA ≥6m"), (3900, True, "ETA 1h05m")])
def test_format_eta(seconds, complete, text):
    assert format_eta(seconds, complete) == text


def record(run_id, condenser="tm-lora", budget=100, condense=100.0):
    return {"run_id": run_id, "condenser": {"name": condenser},
            "spec": {"budget": budget, "backbone": "tinyvit-minilm", "dataset": "synthscenes", "evals": 5},
            "stages": {"prepare": {"wall_s": 2.0}, "condense": {"wall_s": condense}, "evaluate": {"wall_s": 50.0}}}


def test_expected_stage_times_are_medians_over_records_of_the_same_run_shape():
    records = [RunRecord(r) for r in (record("a", condense=100), record("b", condense=300), record("b", condense=300),
                                      record("c", condense=120), record("d", budget=200, condense=999),
                                      record("e", condenser="random", condense=1))]
    earlier = same_shape(records, RunSpec(condenser="tm-lora", budget=100))
    assert sorted(r["run_id"] for r in earlier) == ["a", "b", "c"]  # b once
    assert expected_stages(earlier) == {"prepare": 2.0, "condense": 120.0, "evaluate": 50.0}


def test_the_line_reads_the_live_bar_of_the_current_stage(capsys):
    view = RunProgress("tm-lora@100", evals=5, expected={"condense": 300, "evaluate": 60})
    try:
        view.stage("condense")
        with tqdm(total=100, desc="trajectory matching", unit="it", file=io.StringIO()) as inner:
            inner.update(40)
            view.refresh()
            assert view.bar.desc.startswith("run tm-lora@100: condense · trajectory matching 40/100 it · eval 0/5 · ETA ")
        view.stage("evaluate")
        view.eval_model(2, steps=300)
        with tqdm(total=300, desc="eval model 3/5", unit="step", file=io.StringIO()) as inner:
            inner.update(30)
            view.refresh()
            assert view.bar.desc.startswith("run tm-lora@100: eval 2/5 · 30/300 step · ETA ")
    finally:
        view.close()


def test_a_quiet_view_draws_nothing(capsys):
    view = RunProgress("random@10", evals=1, enabled=False)
    view.stage("condense")
    view.eval_model(0, steps=10)
    view.close()
    assert capsys.readouterr() == ("", "")


def test_a_run_without_progress_prints_nothing(tmp_path, monkeypatch, capfd):
    from vlbench.data.synthscenes import generate
    from vlbench.runner import run

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    generate(tmp_path / "data", 0, train=12, val=0, test=6, pretrain=0)
    capfd.readouterr()
    spec = RunSpec.from_dict(dict(condenser="random", budget=5, data_root=str(tmp_path / "data"), evals=1, device="cpu",
                                  backbone_options={"pretrained": None}, protocol={"steps": 2, "batch_size": 8}))
    run(spec, tmp_path / "results", progress=False)
    out, err = capfd.readouterr()
    # transformers draws its own "Loading weights" bar when the text encoder loads, whatever vlbench asks
    assert out == "" and [line for line in err.replace("\r", "\n").splitlines() if line and "Loading weights" not in line] == []


BARS = """
import sys
import time
from tqdm import tqdm
from vlbench.progress import progress_as_log_lines
if LOG_LINES:
    progress_as_log_lines(interval_s=60)
with tqdm(total=3, desc="eval models", unit="model") as models:
    for k in range(3):
        for _ in tqdm(range(300), desc=f"eval model {k + 1}/3", unit="step", leave=False):
            time.sleep(0.001)
        tqdm.write(f"eval model {k + 1}/3: done", file=sys.stderr)
        models.update()
"""


@pytest.mark.parametrize("log_lines", [False, True], ids=["terminal", "log"])
def test_in_a_log_every_bar_is_a_line_when_it_starts_not_hundreds_of_redraws(log_lines):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", f"LOG_LINES = {log_lines}\n{BARS}"], capture_output=True,
                         check=True).stderr.decode()
    if not log_lines:  # tqdm's own drawing: carriage returns, many redraws of each 300-step bar
        assert "\r" in out and out.count("eval model 1/3:") > 2
        return
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines if "|" in line and "model" in line] == \
        ["eval models"] + [part for k in (1, 2, 3) for part in (f"eval model {k}/3", "eval models")]
    assert [line for line in lines if "done" in line] == [f"eval model {k}/3: done" for k in (1, 2, 3)]
