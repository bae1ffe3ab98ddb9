"""Where a sweep's tasks execute: in this process, a local process pool, or submitit (SLURM or local).

Each executor maps a picklable function over items and yields `(item, result)` as items finish.
A result is what the function returned, or a `JobDied` when the worker itself died (killed,
out of memory, past its time limit): the function is expected to catch its own exceptions.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import subprocess
import time
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from vlbench.core import VLBenchError
from vlbench.parallel import set_jobs, share
from vlbench.storage import atomic_write_json

log = logging.getLogger(__name__)
EXECUTORS = ("local", "submitit-local", "slurm")


@dataclass(frozen=True)
class JobDied:
    """The worker that ran an item died before returning."""

    message: str


class Executor(ABC):
    #: Whether tasks share our terminal, so that progress bars make sense.
    interactive: bool = False

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], items: list[Any],
            notes: list[Path] | None = None) -> Iterator[tuple[Any, Any]]:
        """Run fn on every item; yield (item, result or JobDied) as each finishes.

        `notes`, one file per item, is where an executor that submits jobs notes each item's job,
        so that a later call can find the job still running instead of submitting the item again.
        """


class InProcess(Executor):
    interactive = True

    def map(self, fn, items, notes=None):
        for item in items:
            yield item, fn(item)


class ProcessPool(Executor):
    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn, items, notes=None):
        # spawn, not fork: forking a process that has loaded torch (threads, CUDA) is unsafe. Each worker
        # gets an equal share of the command's cores (vlbench/parallel.py).
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=set_jobs, initargs=(share(self.workers),)) as pool:
            futures = {pool.submit(fn, item): item for item in items}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as e:  # BrokenProcessPool: a worker was killed
                    result = JobDied(f"worker process died ({type(e).__name__}: {e})")
                yield futures[future], result


class Submitit(Executor):
    """One submitit job per item, or one job array for all of them (`array`), on submitit's local
    executor; `Slurm` below is the same on SLURM.

    Every submitted job is noted in its item's note (job id and log folder); `Slurm` waits for a
    noted job that is still in the queue instead of submitting the item again.
    """

    cluster = "local"

    def __init__(self, log_dir: Path, options: dict[str, Any], array: bool = True, name: str = "vlbench",
                 poll_s: float = 1.0):
        self.log_dir, self.options, self.array, self.name, self.poll_s = Path(log_dir), options, array, name, poll_s

    def _executor(self):
        try:
            executor = _submitit().AutoExecutor(folder=self.log_dir, cluster=self.cluster)
        except RuntimeError as e:  # no srun/sbatch on this host
            raise VLBenchError(f"cannot submit to {self.cluster}: {e}") from e
        try:
            executor.update_parameters(name=self.name, **self.options)
        except (NameError, AssertionError, ValueError) as e:  # what submitit raises for bad options
            raise VLBenchError(f"bad submitit option: {str(e).splitlines()[0]}") from e
        return executor

    def map(self, fn, items, notes=None):
        executor = self._executor()  # checks the options before anything is submitted
        notes = notes or [None] * len(items)
        jobs = self._in_flight(notes)
        fresh = [i for i in range(len(items)) if i not in jobs]
        if fresh:
            args = [items[i] for i in fresh]
            submitted = executor.map_array(fn, args) if self.array else [executor.submit(fn, a) for a in args]
            for i, job in zip(fresh, submitted):
                jobs[i] = job
                if notes[i]:
                    _write_note(notes[i], job)
            ids = [job.job_id for job in submitted]
            ids = " ".join(ids if len(ids) <= 4 else [*ids[:2], "...", ids[-1]])
            log.info(f"submitted {count(len(submitted), self.cluster + ' job')}: {ids} "
                     f"(log: {submitted[0].paths.stdout}{', ...' if len(submitted) > 1 else ''})")
        for i, result in self._finished(jobs):
            yield items[i], result

    def _in_flight(self, notes: list[Path | None]) -> dict[int, Any]:
        """{item index: job} of the noted jobs still running; a local job is never adopted."""
        return {}

    def _finished(self, jobs: dict[int, Any]) -> Iterator[tuple[int, Any]]:
        index = {id(job): i for i, job in jobs.items()}
        for job in _submitit().helpers.as_completed(list(jobs.values()), poll_frequency=self.poll_s):
            yield index[id(job)], _result(job, lambda: job.state)


class Slurm(Submitit):
    """Submitit on SLURM, watched through the queue (`squeue`), not accounting (`sacct`).

    A job is finished when its result file exists. A job that is no longer pending or running
    (or no longer in the queue at all) and left no result within `GRACE_POLLS` polls (time for a
    shared file system to show the file) died: the sweep reports the last state the queue showed.
    So a sweep never waits forever on a dead job, with or without SLURM accounting.
    """

    cluster = "slurm"
    GRACE_POLLS = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._warned: set[str] = set()

    def _queue(self) -> dict[str, str] | None:
        """{job id: state} of this user's jobs the controller knows (array tasks one by one); None if unknown."""
        try:
            out = subprocess.run(["squeue", "--me", "--array", "--states=all", "--noheader", "--format=%i|%T"],
                                 capture_output=True, text=True, timeout=120, check=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            message = f"cannot read the SLURM queue (squeue: {detail.strip().splitlines()[0]}); still waiting"
            if message not in self._warned:  # once, not once per poll
                self._warned.add(message)
                log.warning(message)
            return None
        return dict(line.split("|", 1) for line in out.split())

    def _in_flight(self, notes):
        noted = {i: json.loads(note.read_text()) for i, note in enumerate(notes) if note and note.exists()}
        queue = self._queue() if noted else None
        if not queue:
            return {}
        jobs = {i: _submitit().SlurmJob(folder=n["folder"], job_id=n["job_id"])
                for i, n in noted.items() if queue.get(n["job_id"], "COMPLETED") not in FINISHED}
        if jobs:
            log.info(f"waiting for {count(len(jobs), 'job')} submitted earlier and still in the queue: "
                     f"{' '.join(job.job_id for job in jobs.values())}")
        return jobs

    def _finished(self, jobs):
        waiting = dict(jobs)
        last: dict[int, str] = {}  # the last state the queue showed
        gone: dict[int, int] = {}  # polls since the job left the queue or finished, without a result
        while waiting:
            queue = self._queue()
            for i, job in list(waiting.items()):
                if job.paths.result_pickle.exists():
                    del waiting[i]
                    yield i, _result(job, lambda: last.get(i, "unknown"))
                    continue
                if queue is None:  # cannot tell running from dead: wait
                    continue
                last[i] = queue.get(job.job_id, last.get(i, "unknown, it left the queue"))
                gone[i] = gone.get(i, 0) + 1 if job.job_id not in queue or last[i] in FINISHED else 0
                if gone[i] > self.GRACE_POLLS:
                    del waiting[i]
                    yield i, JobDied(f"job {job.job_id} died (state: {last[i]}); log: {job.paths.stderr}")
            if waiting:
                time.sleep(self.poll_s)


#: squeue states of a job that will not run again (anything else may still produce a result).
FINISHED = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                      "PREEMPTED", "TIMEOUT"})


def _result(job, state: Callable[[], str]) -> Any:
    """What the job's function returned, or JobDied with the job's final state and log."""
    try:
        return job.result()
    except Exception:  # UncompletedJobError and kin: the job never returned
        return JobDied(f"job {job.job_id} died (state: {state()}); log: {job.paths.stderr}")


def _write_note(path: Path, job) -> None:
    atomic_write_json(path, {"job_id": job.job_id, "folder": str(job.paths.folder)})


def count(n: int, noun: str) -> str:
    """"1 run", "2 runs"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _submitit():
    try:
        import submitit
    except ImportError as e:
        raise VLBenchError("the slurm and submitit-local executors need submitit: pip install 'vlbench[sweep]'") from e
    return submitit


def make_executor(kind: str, *, workers: int = 0, submitit: dict[str, Any] | None = None,
                  default_log_dir: Path, name: str = "vlbench") -> Executor:
    """`local` runs in this process (workers=0) or a pool; `slurm` and `submitit-local` go through submitit.

    `submitit` holds AutoExecutor parameters (slurm_partition, gpus_per_node, timeout_min, mem_gb, ...)
    plus `array` (one job array, default, or one job per item), `log_dir` (submitit's folder; %j works)
    and `poll_s` (seconds between looks at the jobs).
    """
    if kind == "local":
        return InProcess() if workers == 0 else ProcessPool(workers)
    if kind in ("slurm", "submitit-local"):
        options = dict(submitit or {})
        array = options.pop("array", True)
        log_dir = Path(options.pop("log_dir", default_log_dir)).expanduser()
        # Polling a local process is free; polling SLURM queries the scheduler.
        poll_s = float(options.pop("poll_s", 10.0 if kind == "slurm" else 1.0))
        return (Slurm if kind == "slurm" else Submitit)(log_dir, options, array, name, poll_s)
    raise VLBenchError(f"unknown executor {kind!r} (known: {', '.join(EXECUTORS)})")
