"""Progress: the ETA, the run's line on a terminal (drawn in place, cleared), plain log lines elsewhere, and a
plugin's `ctx.progress` bars in both; messages through `logging`."""
import ast
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlbench.core import RunSpec
from vlbench.progress import (LogLines, Reporter, RunLine, StageTime, TerminalLine, bar, eta, expected_stages,
                              format_eta, quiet, same_run, shown, units_left, use)
from vlbench.board.records import RunRecord, run_shape

VLBENCH = Path(__file__).resolve().parent.parent / "vlbench"


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


SPEC = {"budget": 100, "backbone": "tinyvit-minilm", "dataset": "synthscenes", "evals": 5}


def record(run_id, condenser="tm-lora", budget=100, condense=100.0, config=None):
    return RunRecord({"run_id": run_id, "condenser": {"name": condenser, "config": config or {"iterations": 100}},
                      "spec": {**SPEC, "budget": budget},
                      "stages": {"prepare": {"wall_s": 2.0}, "condense": {"wall_s": condense}, "evaluate": {"wall_s": 50.0}}})


def test_expected_stage_times_are_medians_over_records_of_the_same_run_and_config():
    records = [record("a", condense=100), record("b", condense=300), record("b", condense=300),
               record("c", condense=120), record("d", budget=200, condense=999), record("e", condenser="random", condense=1),
               record("f", condense=5000, config={"iterations": 5000})]  # other options: another run
    earlier = same_run(records, run_shape("tm-lora", {"iterations": 100}, SPEC))
    assert sorted(r["run_id"] for r in earlier) == ["a", "b", "c"]  # b once, f not
    assert expected_stages(earlier) == {"prepare": 2.0, "condense": 120.0, "evaluate": 50.0}


def test_a_runs_shape_is_its_effective_condenser_config():
    from vlbench.runner import Run

    plain = Run(RunSpec("mmdm", 5)).shape
    assert Run(RunSpec("mmdm", 5, condenser_options={"iterations": Run(RunSpec("mmdm", 5)).condenser.config.iterations})
               ).shape == plain  # a default spelled out is the same run
    assert Run(RunSpec("mmdm", 5, condenser_options={"iterations": 3})).shape != plain


def test_the_run_line_reads_the_live_bar_of_the_current_stage():
    assert RunLine("random@5", evals=1).text(None) == "run random@5: prepare · eval 0/1"  # nothing known: no ETA
    line = RunLine("tm-lora@100", evals=5, expected={"condense": 300, "evaluate": 60})
    line.stage("condense")
    reporter = Reporter()
    with reporter.bar(100, "trajectory matching") as inner:
        inner.update(40, note="loss 0.5")
        assert line.text(reporter.live()).startswith(
            "run tm-lora@100: condense · trajectory matching 40/100 it loss 0.5 · eval 0/5 · ETA ")
    line.stage("evaluate")
    line.eval_model(2, steps=300)
    with reporter.bar(300, "eval model 3/5", "step") as inner:
        inner.update(30)
        assert line.text(reporter.live()).startswith("run tm-lora@100: eval 2/5 · 30/300 step · ETA ")


def screen(written: str) -> list[str]:
    """What a terminal shows after `written`: a carriage return moves to the line's start, text overwrites."""
    lines, col = [[]], 0
    for ch in written:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append([])
            col = 0
        else:
            row = lines[-1]
            row[col:col + 1] = [ch]
            col += 1
    return ["".join(row).rstrip() for row in lines]


def test_a_shorter_line_leaves_nothing_of_a_longer_one():
    out = io.StringIO()
    terminal = TerminalLine(out, min_interval_s=0)
    outer = terminal.bar(100, "trajectory matching, a long description")
    outer.update(40, note="loss 0.123 lr_image 100 lr_text 100")
    inner = terminal.bar(3, "eval", "step")  # the newest bar is the line: shorter than the one before
    assert screen(out.getvalue()) == ["eval 0/3 step"]
    terminal.write("a message", out)  # above the line, which is drawn again below it
    assert screen(out.getvalue()) == ["a message", "eval 0/3 step"]
    inner.close()
    outer.close()
    assert screen(out.getvalue()) == ["a message", ""]  # nothing left once the work is done


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vlbench.data.synthscenes import generate

    base = tmp_path_factory.mktemp("progress")
    generate(base / "data", 0, train=12, val=0, test=6, pretrain=0)
    return base


def tiny_spec(tiny, condenser="random", **options):
    return RunSpec.from_dict(dict(condenser=condenser, budget=5, data_root=str(tiny / "data"), evals=1, device="cpu",
                                  condenser_options=options, backbone_options={"pretrained": None},
                                  protocol={"steps": 2, "batch_size": 8}))


def test_a_plugins_ctx_progress_shows_in_the_run_line(tiny, tmp_path, monkeypatch):
    from vlbench.runner import run

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    out = io.StringIO()
    old = use(TerminalLine(out, min_interval_s=0))
    try:
        run(tiny_spec(tiny, "mmdm", iterations=3, batch_real=8), tmp_path / "results")
    finally:
        use(old)
    frames = out.getvalue().split("\r")
    # mmdm's bar (ctx.progress), with the note it sets, inside the run's line, as it advances
    for k in (1, 2, 3):
        assert any(f.startswith(f"run mmdm@5: condense · distribution matching {k}/3 it loss ") for f in frames), k
    assert any(f.startswith("run mmdm@5: eval 0/1 · 1/2 step · ETA ") for f in frames)
    assert screen(out.getvalue()) == [""]  # cleared at the end


def test_a_quiet_run_shows_nothing(tiny, tmp_path, monkeypatch):
    from vlbench.runner import run

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    out = io.StringIO()
    old = use(TerminalLine(out, min_interval_s=0))
    try:
        run(tiny_spec(tiny), tmp_path / "results", progress=False)
        with quiet():
            bar(3, "anything").update()
    finally:
        use(old)
    assert out.getvalue() == ""


def test_log_lines_are_one_per_start_then_one_per_interval(caplog):
    reporter = LogLines(interval_s=3600)
    caplog.set_level(logging.INFO, "vlbench.progress")
    with reporter.running("random@5", evals=2):
        reporter.stage("evaluate")
        for k in range(2):
            reporter.eval_model(k, 300)
            with reporter.bar(300, f"eval model {k + 1}/2", "step") as steps:
                for _ in range(300):
                    steps.update()
    # the stage's start, each model's start; none of the 600 steps (the interval is an hour)
    assert [r.getMessage().split(" · ETA")[0] for r in caplog.records] == [
        "run random@5: eval 0/2", "run random@5: eval 0/2 · 0/300 step", "run random@5: eval 1/2 · 0/300 step"]


def tiny_config(tiny, tmp_path, steps):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"data_root: {tiny / 'data'}\nevals: 2\nbackbone_options: {{pretrained: null}}\n"
                      f"protocol: {{steps: {steps}, batch_size: 8}}\n")
    return ["run", "--condenser", "random", "--budget", "5", "--config", str(config), "--results", str(tmp_path / "results"), "--jobs", "1"]


@pytest.mark.slow
def test_a_cli_run_into_a_log_writes_plain_lines(tiny, tmp_path):
    """`vlbench run ... 2>&1 | cat`: no carriage return or cursor move, a bounded number of lines, messages in."""
    env = {**os.environ, "VLBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).parent / "vlbench"), *tiny_config(tiny, tmp_path, steps=300)]
    out = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True).stdout.decode()
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    progress = [line for line in lines if " INFO run random@5: " in line]
    # a line per stage and per bar start (images and captions of two splits, two evaluation models of 300 steps)
    assert 3 <= len(progress) <= 12, out
    assert sum(line.endswith(" INFO eval model 1/2: mean recall on test " + line.split()[-1]) for line in lines) == 1
    assert lines[-1].startswith("random @ 5 pairs on synthscenes/tinyvit-minilm: mean recall on test")


def test_the_log_level_knob_hides_info_messages_and_progress(tiny, tmp_path, monkeypatch, capsys):
    from vlbench.cli import main

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VLBENCH_LOG", "warning")
    assert main(tiny_config(tiny, tmp_path, steps=2)) == 0
    out, err = capsys.readouterr()
    assert err == "" and "mean recall on test" in out  # the command's own output stays
    monkeypatch.delenv("VLBENCH_LOG")
    assert main([*tiny_config(tiny, tmp_path, steps=2), "--force"]) == 0
    err = capsys.readouterr().err
    assert " INFO run random@5: condense · eval 0/2 · ETA " in err and " INFO eval model 2/2: mean recall" in err


def test_an_unknown_log_level_is_one_line(capsys, monkeypatch):
    from vlbench.cli import main

    monkeypatch.setenv("VLBENCH_LOG", "loud")
    assert main(["list"]) == 2
    assert capsys.readouterr().err == ("vlbench: error: VLBENCH_LOG=loud is not a log level; "
                                       "use one of debug, info, warning, error\n")


def test_shown_logs_messages_above_the_line_and_restores_what_it_changed():
    out = io.StringIO()
    before = logging.getLogger("vlbench").level
    with shown("WARNING", out):
        logging.getLogger("vlbench.board.records").info("hidden")
        logging.getLogger("vlbench_plugins.mmdm").warning("shown")
    assert out.getvalue().endswith(" WARNING shown\n") and "hidden" not in out.getvalue()
    assert logging.getLogger("vlbench").level == before


def test_library_modules_never_print():
    """Library code reports through `logging` and `vlbench.progress`; only the commands (vlbench/cli/) print."""
    found = [f"{path.relative_to(VLBENCH.parent)}:{node.lineno}"
             for path in sorted(VLBENCH.rglob("*.py")) if path.relative_to(VLBENCH).parts[0] != "cli"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert found == []
