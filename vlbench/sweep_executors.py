"""Where a sweep's tasks execute: in this process, a local process pool, or submitit (SLURM or local).

Each executor maps a picklable function over items and yields `(item, result)` as items finish.
A result is what the function returned, or a `JobDied` when the worker itself died (killed,
out of memory, past its time limit): the function is expected to catch its own exceptions.
"""
from __future__ import annotations

import multiprocessing
import sys
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from vlbench.api import VLBenchError

EXECUTORS = ("local", "submitit-local", "slurm")


@dataclass(frozen=True)
class JobDied:
    """The worker that ran an item died before returning."""

    message: str


class Executor(ABC):
    #: Whether tasks share our terminal, so that progress bars make sense.
    interactive: bool = False

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[Any, Any]]:
        """Run fn on every item; yield (item, result or JobDied) as each finishes."""


class InProcess(Executor):
    interactive = True

    def map(self, fn, items):
        for item in items:
            yield item, fn(item)


class ProcessPool(Executor):
    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn, items):
        # spawn, not fork: forking a process that has loaded torch (threads, CUDA) is unsafe.
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(fn, item): item for item in items}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as e:  # BrokenProcessPool: a worker was killed
                    result = JobDied(f"worker process died ({type(e).__name__}: {e})")
                yield futures[future], result


class Submitit(Executor):
    """One submitit job per item, or one job array for all of them (`array`)."""

    def __init__(self, cluster: str, log_dir: Path, options: dict[str, Any], array: bool = True,
                 name: str = "vlbench", poll_s: float = 10.0):
        self.cluster, self.log_dir, self.options = cluster, Path(log_dir), options
        self.array, self.name, self.poll_s = array, name, poll_s

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

    def map(self, fn, items):
        executor = self._executor()
        jobs = executor.map_array(fn, items) if self.array else [executor.submit(fn, item) for item in items]
        print(f"submitted {len(jobs)} {self.cluster} job(s) ({jobs[0].job_id}...); logs in {self.log_dir}",
              file=sys.stderr)
        position = {id(job): i for i, job in enumerate(jobs)}
        for job in _submitit().helpers.as_completed(jobs, poll_frequency=self.poll_s):
            try:
                result = job.result()
            except Exception as e:  # UncompletedJobError and kin: the job never returned
                first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
                result = JobDied(f"job {job.job_id} died ({first}); log: {job.paths.stderr}")
            yield items[position[id(job)]], result


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
    plus `array` (one job array, default, or one job per item) and `log_dir` (submitit's folder; %j works).
    """
    if kind == "local":
        return InProcess() if workers == 0 else ProcessPool(workers)
    if kind in ("slurm", "submitit-local"):
        options = dict(submitit or {})
        array = options.pop("array", True)
        log_dir = Path(options.pop("log_dir", default_log_dir)).expanduser()
        # Polling a local process is free; polling SLURM queries the scheduler.
        cluster, poll_s = ("slurm", 10.0) if kind == "slurm" else ("local", 1.0)
        return Submitit(cluster, log_dir, options, array, name, poll_s)
    raise VLBenchError(f"unknown executor {kind!r} (known: {', '.join(EXECUTORS)})")
