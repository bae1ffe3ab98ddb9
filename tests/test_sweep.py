"""Sweeps: grid expansion, planning against the store, shared stages, executors, resume, concurrency.

End-to-end tests run real tiny runs (24 training images, 2 training steps, 1 evaluation model)
on a generated synthscenes slice, with one cache shared by the whole module (and its subprocesses).
"""
import json
import operator
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from vlbench.api import RunSpec, VLBenchError
from vlbench.cli import main
from vlbench.board.records import ResultsStore, RunRecord
from vlbench.config import expand
from vlbench.sweep.plan import Outcome, Plan, Task, execute, load_sweep, make_plan, run_plan
from vlbench.sweep.executors import Executor, JobDied, ProcessPool, make_executor

TRAIN_IMAGES = 24  # x 5 captions = 120 training pairs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A cache (in os.environ, so that worker processes see it) and a tiny data set.

    One torch thread here and in the workers: tiny runs gain nothing from more, and several
    processes spinning two threads each on a small machine slow each other down.
    """
    import torch

    from vlbench.data.synthscenes import generate

    root = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLBENCH_CACHE", str(root / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        generate(root / "data", 0, train=TRAIN_IMAGES, val=0, test=12, pretrain=0)
        yield root
    torch.set_num_threads(threads)


def write_sweep(path: Path, env: Path, grid: dict, **top) -> Path:
    base = {"data_root": str(env / "data"), "evals": 1, "device": "cpu", "backbone_options": {"pretrained": None},
            "protocol": {"steps": 2, "batch_size": 16}}
    path.write_text(yaml.safe_dump({"grid": {**base, **grid}, "results": str(path.parent / "results"), **top}))
    return path


def forget_prepared() -> None:
    """Drop the stamps of prepared data and stages, as if no earlier test had prepared them."""
    from vlbench.api import cache_dir

    for stamp in (cache_dir() / "locks").glob("*.done"):
        stamp.unlink()


def keys_of(results: Path) -> list[str]:
    return sorted(r["run_key"] for r in ResultsStore(results).records())


# ----------------------------------------------------------------------------- grid and file


def test_expand_lists_are_axes_and_grids_unite():
    specs = expand([
        {"condenser": ["random", "herding"], "budget": [10, 100], "seed": 3, "condenser_options": {"a": [1, 2]},
         "protocol": [{"steps": 5}, {"steps": 7}]},
        {"condenser": "full"},
    ])
    assert len(specs) == 2 * 2 * 2 + 1
    assert {(s.condenser, s.budget, s.protocol.steps) for s in specs[:-1]} == {
        (c, b, p) for c in ("random", "herding") for b in (10, 100) for p in (5, 7)}
    assert all(s.seed == 3 and s.condenser_options == {"a": [1, 2]} for s in specs[:-1])  # a dict is one value
    assert specs[-1] == RunSpec("full", 0)
    with pytest.raises(VLBenchError, match="unknown run option"):
        expand([{"condenser": "random", "budgett": 5}])
    with pytest.raises(VLBenchError, match="bad grid entry"):
        expand([{"condenser": "random", "protocol": {"stpes": 5}}])


def test_load_sweep_defaults_overrides_and_errors(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("grid: {condenser: random, budget: [1, 2]}\nworkers: 2\n")
    sweep = load_sweep(path, executor="submitit-local", workers=None)
    assert (sweep.name, sweep.executor, sweep.workers, sweep.results) == ("grid", "submitit-local", 2, "results")
    for text, message in [
        ("grid: {condenser: random}\nexecutor: kubernetes\n", "unknown executor 'kubernetes'"),
        ("grid: {condenser: random}\nworkres: 2\n", "unknown key"),
        ("condenser: random\n", "must be a mapping with a `grid`"),
        ("grid: [1, 2]\n", "`grid` must be"),
        ("grid: {condenser: random}\nretries: -1\n", ">= 0"),
    ]:
        path.write_text(text)
        with pytest.raises(VLBenchError, match=message):
            load_sweep(path)


def test_plan_rejects_a_budget_above_the_training_set(env, tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", env, {"condenser": "random", "budget": [5, 999]}))
    with pytest.raises(VLBenchError, match=r"budget=999: budget must be between 1 and the 120 training pairs"):
        make_plan(sweep)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_local_sweep_records_every_run_once_and_reruns_skip(env, tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", env, {"condenser": ["random", "full"], "budget": [5, 10]})
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 runs: 0 done, 3 to run" in out  # `full` at two budgets is one run
    assert "prepare  data" in out
    assert not (tmp_path / "results").exists()  # a dry run launches nothing

    assert main(["sweep", str(path)]) == 0
    records = ResultsStore(tmp_path / "results").records()
    plan = make_plan(load_sweep(path))
    # The sweep's keys are the ones the runner recorded; `full` is recorded at all 120 training pairs.
    assert sorted(t.key for t in plan.runs) == keys_of(tmp_path / "results")
    assert sorted(r["budget"] for r in records) == [5, 10, 5 * TRAIN_IMAGES]
    assert set(plan.done) == {t.key for t in plan.runs} and plan.phases == []

    capsys.readouterr()
    assert main(["sweep", str(path)]) == 0
    assert "3 runs: 3 done, 0 to run" in capsys.readouterr().out
    assert len(ResultsStore(tmp_path / "results").records()) == 3


@pytest.mark.slow
def test_shared_stages_are_prepared_once_before_the_runs(env, tmp_path, monkeypatch):
    from vlbench.api import cache_dir
    from vlbench_plugins.random_subset import RandomPairs

    monkeypatch.setattr(RandomPairs, "requires", frozenset({"reference_model"}))
    forget_prepared()
    path = write_sweep(tmp_path / "s.yaml", env, {"condenser": "random", "budget": [5, 10], "seed": [0, 1]})
    plan = make_plan(load_sweep(path))
    kinds = [[t.kind for t in phase] for phase in plan.phases]
    assert kinds == [["data"], ["stage", "stage"], ["run"] * 4]  # one reference model per seed, not per run
    stages = {t.spec.seed: t.key for t in plan.phases[1]}
    assert all(stages[t.spec.seed] in t.needs and plan.phases[0][0].key in t.needs for t in plan.runs)

    lines = []
    run_plan(plan, make_executor("local", default_log_dir=tmp_path), echo=lines.append)
    assert [line.split()[:2] for line in lines] == [["ok", "data"]] + [["ok", "stage"]] * 2 + [["ok", "run"]] * 4
    assert len(list((cache_dir() / "reference").glob("*.safetensors"))) == 2

    # What was prepared stays prepared: a run without a record is planned alone.
    next(Path(tmp_path / "results" / "records").glob("*.json")).unlink()
    assert [[t.kind for t in phase] for phase in make_plan(load_sweep(path)).phases] == [["run"]]


def test_an_expert_buffer_is_built_once_in_the_prepare_phase(env, tmp_path):
    """Two tm-lora budgets share one buffer: a stage task builds it, and neither run trains an expert."""
    from vlbench.api import cache_dir

    forget_prepared()
    options = {"iterations": 1, "syn_steps": 2, "num_experts": 1, "train_epochs": 1, "max_start_epoch": 0}
    path = write_sweep(tmp_path / "s.yaml", env, {"condenser": "tm-lora", "budget": [5, 10], "condenser_options": options})
    plan = make_plan(load_sweep(path))
    assert [[t.kind for t in phase] for phase in plan.phases] == [["data"], ["stage"], ["run", "run"]]
    assert plan.phases[1][0].stage == "expert_buffer" and all(plan.phases[1][0].key in t.needs for t in plan.runs)

    lines = []
    run_plan(plan, make_executor("local", default_log_dir=tmp_path), echo=lines.append)
    assert [line.split()[:2] for line in lines] == [["ok", "data"], ["ok", "stage"], ["ok", "run"], ["ok", "run"]]
    assert len([p for p in (cache_dir() / "experts").iterdir() if p.is_dir()]) == 1
    for record in ResultsStore(tmp_path / "results").records():
        [shared] = record["condensed"]["cost"]["shared"]  # each run is charged the buffer it reused
        assert shared["stage"] == "expert_buffer" and not shared["built_now"] and shared["wall_s"] > 0
        assert shared["built_by"] == plan.runs[0].key  # prepared for the first run that needs it


@pytest.mark.slow
def test_submitit_local_executor(env, tmp_path):
    logs = tmp_path / "logs"
    path = write_sweep(tmp_path / "s.yaml", env, {"condenser": "random", "budget": [5, 10]},
                       executor="submitit-local", submitit={"log_dir": str(logs), "timeout_min": 10})
    forget_prepared()
    assert main(["sweep", str(path)]) == 0
    assert keys_of(tmp_path / "results") == sorted(t.key for t in make_plan(load_sweep(path)).runs)
    # One prepare job, then a job array of the two runs, each with its own log, and each noted
    # beside its task's lock (runs in the results store, the data in the cache).
    assert len(list(logs.glob("*_log.out"))) == 3
    notes = [json.loads(p.read_text()) for p in [*(tmp_path / "results" / ".locks").glob("*.job"),
                                                 *(env / "cache" / "locks").glob("data-*.job")]]
    assert len(notes) == 3 and all((logs / f"{n['job_id']}_0_log.out").exists() for n in notes)


@pytest.mark.slow
def test_resume_after_a_killed_sweep(env, tmp_path):
    path = write_sweep(tmp_path / "s.yaml", env, {"condenser": "random", "budget": [4, 6, 8, 10]})
    records = tmp_path / "results" / "records"
    driver = subprocess.Popen([sys.executable, "-m", "vlbench.cli", "sweep", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(records.glob("*.json")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(driver.pid, signal.SIGKILL)  # mid-sweep: the second run is in flight
    finally:
        driver.wait()
    first = sorted(p.name for p in records.glob("*.json"))
    assert 1 <= len(first) < 4

    assert main(["sweep", str(path)]) == 0
    after = sorted(p.name for p in records.glob("*.json"))
    assert set(first) <= set(after) and len(after) == 4  # done runs skipped, the rest run once
    assert len(set(keys_of(tmp_path / "results"))) == 4


# ----------------------------------------------------------------------------- scheduling and concurrency


class Scripted(Executor):
    """Answers each task from a script of outcomes per task label, instead of running it."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def map(self, fn, items, notes=None):
        for task in items:
            self.calls.append(task.label)
            yield task, self.script[task.label].pop(0)


def task(kind, label, needs=()):
    return Task(kind, label, RunSpec("random", 1), "results", label, needs=tuple(needs))


def test_failed_prerequisites_block_their_runs_and_retries_relaunch():
    data_a, data_b = task("data", "a"), task("data", "b")
    runs = [task("run", "a1", ["a"]), task("run", "b1", ["b"]), task("run", "b2", ["b"])]
    plan = Plan(runs, {}, [[data_a, data_b], runs])
    executor = Scripted({
        "a": [Outcome("failed", "disk full"), Outcome("failed", "disk full")],
        "b": [Outcome("failed", "flaky"), Outcome("ok", "prepared")],
        "b1": [JobDied("job 7 died (out of memory)"), Outcome("ok", "done")],
        "b2": [Outcome("busy", "running in another process")],
    })
    lines = []
    outcomes = run_plan(plan, executor, retries=1, echo=lines.append)
    assert executor.calls == ["a", "b", "a", "b", "b1", "b2", "b1"]  # a1 never launched; busy is not retried
    assert outcomes["a1"] == Outcome("failed", "not launched: prerequisite a failed")
    assert outcomes["b1"] == Outcome("ok", "done") and outcomes["b2"].status == "busy"
    assert "blocked  a1: not launched: prerequisite a failed" in lines
    assert "failed   run    b1: job 7 died (out of memory) (retrying)" in lines


def test_process_pool_reports_a_dead_worker():
    assert dict(ProcessPool(2).map(operator.neg, [1, 2, 3])) == {1: -1, 2: -2, 3: -3}
    [(item, result)] = ProcessPool(1).map(os._exit, [3])
    assert item == 3 and isinstance(result, JobDied) and "died" in result.message


def test_concurrent_sweeps_never_run_or_record_a_run_twice(tmp_path, monkeypatch):
    import vlbench.runner

    started = threading.Event()

    def slow_run(spec, results_dir, progress=False, allow_dirty=False):
        started.set()
        time.sleep(0.5)
        record = {"run_id": f"k-{time.time_ns()}", "run_key": "k", "created": "2026-01-01T00:00:00Z",
                  "metrics": {"mean": {"mean": 1.0}, "std": {"mean": 0.0}}}
        ResultsStore(results_dir).add(record)
        return RunRecord(record)  # what runner.run returns

    monkeypatch.setattr(vlbench.runner, "run", slow_run)
    run = Task("run", "k", RunSpec("random", 1), str(tmp_path), "k")
    outcomes = []
    first = threading.Thread(target=lambda: outcomes.append(execute(run)))
    first.start()
    started.wait(10)
    outcomes.append(execute(run))  # another sweep reaches the same run while the first holds it
    first.join()
    assert [o.status for o in outcomes] == ["busy", "ok"]
    assert execute(run) == Outcome("ok", "already recorded")
    assert len(ResultsStore(tmp_path).records()) == 1


def test_a_failing_task_reports_one_line(tmp_path, caplog):
    outcome = execute(Task("run", "k", RunSpec("no-such-condenser", 1), str(tmp_path), "k"))
    assert outcome.status == "failed"
    assert outcome.message.startswith("unknown condenser 'no-such-condenser'") and "\n" not in outcome.message
    assert "Traceback" in caplog.text  # the whole story goes to the job's log (logged with its trace)


def test_examples_parse():
    examples = sorted(Path(__file__).parent.parent.glob("examples/sweep-*.yaml"))
    assert examples
    for path in examples:
        assert expand(load_sweep(path).grid)


def test_a_misspelled_submitit_option_is_one_line_before_any_job(tmp_path):
    executor = make_executor("submitit-local", submitit={"slurm_partiton": "gpu"}, default_log_dir=tmp_path)
    with pytest.raises(VLBenchError, match=r"^bad submitit option: Unknown argument 'partiton'"):
        list(executor.map(abs, [1]))
    assert not list(tmp_path.glob("*_submitted.pkl"))
