"""Sweeps through a real SLURM: sbatch, job arrays, a killed task, reruns after a killed sweep.

Needs a SLURM cluster that runs jobs on this machine (CI starts one with .ci/slurm_up.sh); where
none answers, every test here skips with the reason, or fails with it under VLBENCH_REQUIRE_SLURM=1
(CI sets it where it could start one: root and apt). The jobs run this interpreter (the venv) on
the same node, so they see the same files. One tiny generated data set and one cache serve the
whole module: the first sweep prepares the data, later sweeps find it prepared.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from vlbench.board.records import ResultsStore

pytestmark = pytest.mark.slurm


def cluster_problem() -> str | None:
    """Why no SLURM cluster can run our jobs, or None."""
    if not all(shutil.which(tool) for tool in ("sbatch", "squeue", "scancel", "sinfo", "srun")):
        return "the SLURM client tools are not installed (CI starts a cluster with .ci/slurm_up.sh)"
    try:
        out = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%T"], capture_output=True, text=True,
                             timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if out.returncode:
        return f"sinfo failed: {(out.stderr.strip().splitlines() or ['?'])[0]}"
    if not {"idle", "mixed", "allocated"} & set(out.stdout.split()):
        return f"no node is up (sinfo: {' '.join(out.stdout.split()) or 'no nodes'})"
    try:
        job = subprocess.run(["srun", "--ntasks=1", "--time=1", "true"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "a one-second job (srun true) did not finish within 60 s"
    if job.returncode:
        return f"a one-second job failed: {(job.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A private cache and a tiny data set (24 training images, 120 pairs); skips without SLURM."""
    problem = cluster_problem()
    if problem and os.environ.get("VLBENCH_REQUIRE_SLURM") == "1":  # CI where a cluster can be started
        pytest.fail(f"no SLURM cluster, though VLBENCH_REQUIRE_SLURM=1: {problem}", pytrace=False)
    if problem:
        pytest.skip(f"no SLURM cluster: {problem}")
    from vlbench.data.synthscenes import generate

    root = tmp_path_factory.mktemp("slurm")
    generate(root / "data", 0, train=24, val=0, test=12, pretrain=0)
    with pytest.MonkeyPatch.context() as mp:  # sbatch exports our environment to the jobs
        mp.setenv("VLBENCH_CACHE", str(root / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("PYTHONUNBUFFERED", "1")
        yield root


def write_sweep(directory: Path, cluster: Path, grid: dict, **submitit) -> Path:
    """A sweep of tiny runs (2 training steps, 1 evaluation model), polling the queue every second."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"t{uuid.uuid4().hex[:8]}",  # job names unique across sessions on one cluster
        "results": str(directory / "results"),
        "executor": "slurm",
        "submitit": {"poll_s": 1, "timeout_min": 10, "log_dir": str(directory / "logs" / "%j"), **submitit},
        "grid": {"evals": 1, "device": "cpu", "data_root": str(cluster / "data"),
                 "backbone_options": {"pretrained": None}, "protocol": {"steps": 2, "batch_size": 16}, **grid},
    }))
    return path


class Sweep:
    """`vlbench sweep FILE` in its own process group, its output in a file we can read as it grows."""

    def __init__(self, path: Path, *args: str, env: dict | None = None):
        self.name = yaml.safe_load(path.read_text())["name"]
        self.log = path.parent / f"out-{time.monotonic_ns()}.txt"
        with self.log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "vlbench.cli", "sweep", str(path), *args],
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, **(env or {})})

    @property
    def output(self) -> str:
        return self.log.read_text()

    def expect(self, pattern: str, timeout: float = 240) -> re.Match:
        """Wait until the output matches `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output, re.MULTILINE)
            if match:
                return match
            if self.process.poll() is not None:
                pytest.fail(f"sweep exited ({self.process.returncode}) without printing {pattern!r}:\n{self.output}")
            time.sleep(0.2)
        pytest.fail(f"no {pattern!r} within {timeout} s:\n{self.output}")

    def finish(self, timeout: float = 300) -> str:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"sweep still running after {timeout} s:\n{self.output}")
        assert self.process.returncode == 0, self.output
        return self.output

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def launch():
    """Starts sweeps; afterwards kills those still running and cancels their jobs (a held job would wait forever)."""
    started = []

    def start(path: Path, *args: str, env: dict | None = None) -> Sweep:
        started.append(Sweep(path, *args, env=env))
        return started[-1]

    yield start
    for sweep in started:
        if sweep.process.poll() is None:
            sweep.kill()
        slurm("scancel", f"--name=vlbench-{sweep.name}")


def submitted(output: str) -> list[str]:
    """The job ids of every `submitted ...` line (the executor logs it: time, level, message)."""
    return [i for line in re.findall(r"^\S+ INFO submitted \d+ slurm jobs?: ([\d_ .]+) \(", output, re.MULTILINE)
            for i in line.split() if i != "..."]


def slurm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def accounted_states(jobs: list[str], timeout: float = 60) -> list[str]:
    """`JOBID|STATE` of each job as accounting has it, once it has caught up: sacct lags the queue, so a job
    whose result the sweep already read can still show RUNNING for a while. After `timeout` s, as it stands."""
    deadline = time.monotonic() + timeout
    while True:
        states = slurm("sacct", "--noheader", "--parsable2", "-X", "--format=JobID,State",
                       *(f"--jobs={j}" for j in jobs)).stdout.split()
        if (len(states) == len(jobs) and not any(s.endswith(("|PENDING", "|RUNNING", "|COMPLETING")) for s in states)
                or time.monotonic() > deadline):
            return states
        time.sleep(1)


@pytest.fixture(scope="module")
def first_sweep(cluster, tmp_path_factory):
    """random + herding at budgets 20 and 40 through sbatch: data, a reference model, a job array of 4 runs."""
    path = write_sweep(tmp_path_factory.mktemp("first"), cluster, {"condenser": ["random", "herding"], "budget": [20, 40]})
    return path, Sweep(path).finish()


def test_a_sweep_runs_through_sbatch(first_sweep):
    path, out = first_sweep
    assert re.search(r"^ok +data .*: prepared$", out, re.MULTILINE)
    assert re.search(r"^ok +stage +reference_model for .*: prepared$", out, re.MULTILINE)
    assert len(re.findall(r"^ok +run +condenser=\w+ budget=\d+: mean recall", out, re.MULTILINE)) == 4
    assert "all 4 runs recorded" in out
    jobs = submitted(out)
    assert len(jobs) == 6 and "%j" not in out  # one data job, one stage job, an array of 4 runs
    # SLURM ran them (and accounting saw them finish).
    assert sorted(accounted_states(jobs)) == sorted(f"{j}|COMPLETED" for j in jobs)
    assert len(ResultsStore(path.parent / "results").records()) == 4


def test_a_rerun_submits_only_the_missing_run(first_sweep, tmp_path, launch):
    path, _ = first_sweep
    results = tmp_path / "results"
    shutil.copytree(path.parent / "results", results)
    records = sorted((results / "records").glob("*.json"))
    records[0].unlink()
    out = launch(path, "--results", str(results)).finish()
    assert "4 runs: 3 done, 1 to run" in out
    assert len(submitted(out)) == 1 and "prepare" not in out  # the data and the reference model exist
    assert len(re.findall(r"^ok +run ", out, re.MULTILINE)) == 1
    assert {p.name for p in records[1:]} < {p.name for p in (results / "records").glob("*.json")}
    assert len(ResultsStore(results).records()) == 4


@pytest.fixture
def no_accounting(tmp_path):
    """Client settings of a cluster without accounting: sacct fails, squeue and sbatch work."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    lines = [line for line in conf.read_text().splitlines() if not line.startswith("AccountingStorage")]
    (tmp_path / "slurm.conf").write_text("\n".join(lines + ["AccountingStorageType=accounting_storage/none"]) + "\n")
    env = {"SLURM_CONF": str(tmp_path / "slurm.conf")}
    sacct = slurm("sacct", "--noheader", env=env)
    assert sacct.returncode != 0 or "disabled" in sacct.stderr, "sacct still answers without accounting"
    return env


@pytest.mark.parametrize("accounting", [True, False], ids=["accounting", "no-accounting"])
def test_a_killed_task_is_reported_dead_and_retried(first_sweep, cluster, tmp_path, accounting, request, launch):
    """The first job is the run's: the data is prepared (by the first sweep)."""
    env = None if accounting else request.getfixturevalue("no_accounting")
    # 2000 steps (tens of seconds): long enough that the kill always lands mid-run, even on a loaded machine
    # (with the default 2 steps the job could finish between its first output line and scancel).
    path = write_sweep(tmp_path, cluster, {"condenser": "random", "budget": 30, "seed": 2 if accounting else 3,
                                           "protocol": {"steps": 2000, "batch_size": 16}})
    sweep = launch(path, "--retries", "1", env=env)
    first = sweep.expect(r"^\S+ INFO submitted 1 slurm job: (\S+) ").group(1)
    log = tmp_path / "logs" / first / f"{first}_0_log"
    out = log.with_suffix(".out")
    deadline = time.monotonic() + 120
    while "Loading pickle" not in (out.read_text() if out.exists() else ""):  # the job step runs our python
        assert time.monotonic() < deadline, f"job {first} did not start:\n{sweep.output}"
        time.sleep(0.2)
    assert slurm("scancel", "--signal=KILL", first).returncode == 0
    killed = time.monotonic()
    sweep.expect(rf"job {first} died", timeout=60)
    assert time.monotonic() - killed < 20  # a few polls (poll_s 1), not forever
    out = sweep.finish()
    assert "sacct" not in out and "accounting" not in out  # the sweep never asked accounting
    assert f"failed   run    condenser=random budget=30: job {first} died (state: CANCELLED); log: {log}.err (retrying)" in out
    assert len(submitted(out)) == 2 and re.search(r"^ok +run +condenser=random budget=30: mean recall", out, re.MULTILINE)
    assert "the run is recorded in" in out and len(ResultsStore(tmp_path / "results").records()) == 1


def test_a_rerun_after_a_killed_sweep_waits_for_its_jobs(first_sweep, cluster, tmp_path, launch):
    """Jobs are submitted held (`sbatch --hold`), so each kill lands while they are in the queue."""
    path = write_sweep(tmp_path, cluster, {"condenser": "herding", "budget": [20, 40], "seed": 1},
                       slurm_additional_parameters={"hold": True})
    first = launch(path)
    stage = first.expect(r"^\S+ INFO submitted 1 slurm job: (\S+) \(").group(1)
    first.kill()  # while the reference model's job waits in the queue

    second = launch(path)
    second.expect(rf"^\S+ INFO waiting for 1 job submitted earlier and still in the queue: {stage}$")
    assert slurm("scontrol", "release", stage).returncode == 0
    runs = second.expect(r"^\S+ INFO submitted 2 slurm jobs: (\S+ \S+) \(").group(1).split()
    assert submitted(second.output) == runs  # the stage was not submitted again
    second.kill()  # while the runs wait in the queue

    third = launch(path)
    third.expect(rf"^\S+ INFO waiting for 2 jobs submitted earlier and still in the queue: {' '.join(runs)}$")
    assert slurm("scontrol", "release", runs[0].split("_")[0]).returncode == 0
    out = third.finish()
    assert submitted(out) == [] and "all 2 runs recorded" in out
    assert len(ResultsStore(tmp_path / "results").records()) == 2
    queue = slurm("squeue", "--noheader", "--array", "--states=all", f"--name=vlbench-{third.name}", "--format=%i").stdout
    assert sorted(queue.split()) == sorted([stage, *runs])  # three jobs in all, none twice
