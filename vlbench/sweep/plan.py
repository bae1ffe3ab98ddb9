"""Sweeps: a grid of runs, planned into shared work and runs, executed resumably.

A sweep file (YAML) names a `grid`: any RunSpec field may be a list, and the runs are the
cartesian product (a list of grids is their union). Planning gives every run the key the runner
records (`Run.run_key`); a run with a record in the results store (found by `Run.identity`: the same
spec and effective condenser config, however its options are spelled) is done and skipped.
What the pending runs share is executed first, once per distinct cache key, in phases:

1. data: backbone weights and text features, per data set and backbone;
2. shared stages the condensers declare (`Condenser.requires`: the full-data reference model, the
   forgetting history, an expert buffer; plugins register them, vlbench/stages.py);
3. the runs.

Each phase waits for the one before; a task whose prerequisite failed is not launched. Inside a
task, a file lock per run key (in the results directory) keeps two sweeps from running the same
run twice, and one per shared stage (in the cache) makes a second preparer wait for the first.
A prepare task that succeeded leaves a stamp beside its lock, so that later plans skip it; the
executor notes each task's job there too, so that a rerun waits for a job still in flight
instead of submitting the task again. Design notes: docs/sweeps.md.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vlbench.config import expand, read_sweep
from vlbench.core import RunSpec, VLBenchError, cache_dir, stable_hash
from vlbench.board.records import ResultsStore
from vlbench.progress import quiet
from vlbench.storage import file_lock
from vlbench.sweep.executors import EXECUTORS, Executor, JobDied, count

log = logging.getLogger(__name__)



@dataclass
class Sweep:
    """A parsed sweep file; CLI flags replace its fields."""

    name: str
    grid: list[dict[str, Any]]
    results: str = "results"
    executor: str = "local"
    workers: int = 0  # local executor: 0 runs in this process, N in a pool of N processes
    retries: int = 0  # relaunches of a failed task within one sweep (a rerun retries anyway)
    submitit: dict[str, Any] = field(default_factory=dict)  # AutoExecutor parameters, `array`, `log_dir`
    allow_dirty: bool = False  # `--allow-dirty`: record even from code no commit holds (not a file key)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise VLBenchError(f"unknown executor {self.executor!r} (known: {', '.join(EXECUTORS)})")
        if self.workers < 0 or self.retries < 0:
            raise VLBenchError("workers and retries must be >= 0")

    @property
    def log_dir(self) -> Path:
        return cache_dir() / "sweeps" / self.name / "logs"


def load_sweep(path: str | Path, **overrides: Any) -> Sweep:
    """Read a sweep file; `overrides` (CLI flags, None = not given) win over it."""
    return Sweep(**{**read_sweep(path), **{k: v for k, v in overrides.items() if v is not None}})


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Task:
    """One unit of work: prepare shared data ("data"), a shared stage ("stage"), or a run ("run")."""

    kind: str
    key: str  # the run key, or the cache identity of what is prepared
    spec: RunSpec  # for runs: exactly the spec the record will hold
    results: str
    label: str
    stage: str | None = None
    needs: tuple[str, ...] = ()  # keys of the tasks that must succeed first
    allow_dirty: bool = False  # a run: record into a tracked directory from uncommitted code
    identity: str | None = None  # a run's: how the results store recognises its record (Run.identity)

    def __post_init__(self):
        if self.identity is None:  # what it is for a run that spells out no condenser option
            object.__setattr__(self, "identity", self.key)

    def beside_lock(self, suffix: str) -> Path:
        """A file beside the task's lock: runs lock in the results store, prepare tasks in the cache."""
        where = Path(self.results) / ".locks" if self.kind == "run" else cache_dir() / "locks"
        return where / f"{self.key}{suffix}"

    @property
    def prepared(self) -> bool:
        """A prepare task that succeeded before (its stamp is cleared with the cache)."""
        return self.kind != "run" and self.beside_lock(".done").exists()


@dataclass
class Plan:
    runs: list[Task]  # every run of the grid, in grid order
    done: dict[str, str]  # run key -> run_id of a record of the run
    phases: list[list[Task]]  # what is left to execute, in order

    @property
    def pending(self) -> list[Task]:
        return [t for t in self.runs if t.key not in self.done]


def _label(spec: RunSpec, fields: list[str]) -> str:
    values = dataclasses.asdict(spec)  # every field (to_dict leaves out an unset evaluation backbone)
    return " ".join(f"{f}={json.dumps(values[f], sort_keys=True) if isinstance(values[f], dict) else values[f]}"
                    for f in fields)


def make_plan(sweep: Sweep) -> Plan:
    from vlbench.runner import Run

    specs = expand(sweep.grid)
    results = str(Path(sweep.results).expanduser().resolve())  # jobs may start in another directory
    recorded = {r.identity: r.run_id for r in ResultsStore(results).records()}
    dicts = [dataclasses.asdict(s) for s in specs]
    varying = [f for f in dicts[0] if any(d[f] != dicts[0][f] for d in dicts)] or ["condenser", "budget"]
    datasets: dict[str, Any] = {}  # each data set is read once
    runs: dict[str, Task] = {}
    prepares: dict[str, Task] = {}
    for spec in specs:
        where = stable_hash([spec.dataset, spec.data_root, spec.dataset_options])
        try:
            run = Run(spec, dataset=datasets.get(where))
            datasets[where] = run.dataset
            run.check_budget()
        except VLBenchError as e:
            raise VLBenchError(f"grid run {_label(spec, varying)}: {e}") from e
        spec, identity = run.spec, run.identity
        if identity in runs:  # the same run twice (e.g. `full` at several budgets, an option spelled at its default)
            continue
        needs = []
        if identity not in recorded:
            dataset = run.dataset
            evaluated_on = [run.eval_backbone.id] if run.eval_backbone is not run.backbone else []
            data_key = "data-" + stable_hash([dataset.name, dataset.fingerprint, run.backbone.id, *evaluated_on])
            data = Task("data", data_key, spec, results, " · ".join([dataset.name, run.backbone.id, *evaluated_on]))
            shared = [data] + [
                Task("stage", f"{stage}-{stage_key}", spec, results,
                     f"{stage} for {dataset.name} · {run.backbone.id} · seed {spec.seed} · protocol {spec.protocol.id}",
                     stage, (data_key,))
                for stage, stage_key in run.stage_keys.items()]
            needs = [prepares.setdefault(t.key, t).key for t in shared if not t.prepared]
        runs[identity] = Task("run", run.run_key, spec, results, _label(spec, varying), needs=tuple(needs),
                              allow_dirty=sweep.allow_dirty, identity=identity)
    phases = [[t for t in prepares.values() if t.kind == kind] for kind in ("data", "stage")]
    phases.append([t for t in runs.values() if t.identity not in recorded])
    done = {t.key: recorded[t.identity] for t in runs.values() if t.identity in recorded}
    return Plan(list(runs.values()), done, [p for p in phases if p])


def describe(plan: Plan) -> str:
    """What a sweep would do: the prepare tasks, then every run, done or to run."""
    lines = [f"{count(len(plan.runs), 'run')}: {len(plan.done)} done, {len(plan.pending)} to run"]
    lines += [f"  prepare  {t.kind:<5}  {t.label}" for phase in plan.phases for t in phase if t.kind != "run"]
    for task in plan.runs:
        done = plan.done.get(task.key)
        lines.append(f"  {'done' if done else 'run':<7}  {task.label}" + (f"  (record {done})" if done else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- executing


@dataclass(frozen=True)
class Outcome:
    status: str  # "ok", "failed", or "busy" (another process holds the run)
    message: str


def execute(task: Task, progress: bool = False) -> Outcome:
    """Run one task (in whatever process or job the executor chose); never raises."""
    from vlbench.condensing import prepare
    from vlbench.runner import Run, run

    try:
        if task.kind != "run":
            with file_lock(task.beside_lock(".lock"), wait=True):
                with nullcontext() if progress else quiet():
                    prepare(Run(task.spec), [task.stage] if task.stage else [])
                task.beside_lock(".done").touch()
            return Outcome("ok", "prepared")
        store = ResultsStore(task.results)
        with file_lock(task.beside_lock(".lock"), wait=False) as held:
            if not held:
                return Outcome("busy", "running in another process")
            if store.find(task.identity):  # recorded by another sweep since we planned
                return Outcome("ok", "already recorded")
            record = run(task.spec, task.results, progress=progress, allow_dirty=task.allow_dirty)
        mean, std = record.mean_recall
        return Outcome("ok", f"mean recall {mean:.1f} ± {std:.1f} (record {record.run_id})")
    except Exception as e:
        log.exception(f"{task.label} failed")  # the whole story goes to the job's log; the sweep shows one line
        return Outcome("failed", str(e).splitlines()[0] if isinstance(e, VLBenchError) else f"{type(e).__name__}: {e}")


def run_plan(plan: Plan, executor: Executor, retries: int = 0, echo: Callable[[str], None] = print) -> dict[str, Outcome]:
    """Execute the plan's phases in order; returns the last outcome of every task that ran or was blocked."""
    outcomes: dict[str, Outcome] = {}
    fn = functools.partial(execute, progress=executor.interactive)
    for phase in plan.phases:
        ready = []
        for task in phase:
            failed = [k for k in task.needs if outcomes.get(k, Outcome("ok", "")).status == "failed"]
            if failed:
                outcomes[task.key] = Outcome("failed", f"not launched: prerequisite {failed[0]} failed")
                echo(f"blocked  {task.label}: {outcomes[task.key].message}")
            else:
                ready.append(task)
        for attempt in range(retries + 1):
            if not ready:
                break
            again = []
            for task, result in executor.map(fn, ready, [t.beside_lock(".job") for t in ready]):
                outcome = Outcome("failed", result.message) if isinstance(result, JobDied) else result
                outcomes[task.key] = outcome
                retry = outcome.status == "failed" and attempt < retries
                echo(f"{outcome.status:<7}  {task.kind:<5}  {task.label}: {outcome.message}" + (" (retrying)" if retry else ""))
                if retry:
                    again.append(task)
            ready = again
    return outcomes


def missing(plan: Plan) -> list[Task]:
    """The plan's runs that have no record (read afresh from the results store)."""
    recorded = {r.identity for r in ResultsStore(plan.runs[0].results).records()} if plan.runs else set()
    return [t for t in plan.runs if t.identity not in recorded]
