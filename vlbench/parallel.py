"""How a command uses the machine's cores: the one place that decides threads and workers.

- **Cores.** A command uses `jobs()` cores: `--jobs N` or `VLBENCH_JOBS=N`, else every core this
  process may run on. A lone `vlbench run` has them all; a sweep with W workers gives each worker
  process `jobs() // W` of them (at least 1), through the same variable, so a run inside reads its
  share as if it were alone.
- **Workers.** A run's independent units (its evaluation models, the expert trajectories of a
  buffer; caption batches have their own pool, `vlbench.text_encoders`) go to a `Pool` of one
  single-threaded worker process per core of its share, never more than there are units.
- **Threads.** Every number is computed on one torch thread: condensing, expert training and
  evaluation alike (`one_thread`). Intra-op threads split sums differently (2 threads change a
  distilled set in its last bits within 3 iterations, docs/benchmarks.md), and a number must not
  depend on how many threads or workers made it; committed records were made on one thread.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from vlbench.core import VLBenchError

JOBS_VAR = "VLBENCH_JOBS"
JOBS_HELP = "cores to use (default: VLBENCH_JOBS, else every usable core); a sweep splits them between its workers"
#: The torch threads every recorded number is computed with.
NUMERIC_THREADS = 1


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which SLURM and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def jobs() -> int:
    """The cores this command may use: VLBENCH_JOBS (`--jobs`), else every usable core."""
    value = os.environ.get(JOBS_VAR)
    if not value:
        return usable_cores()
    if not value.isdigit() or int(value) < 1:
        raise VLBenchError(f"{JOBS_VAR} must be a positive number of cores, got {value!r}")
    return int(value)


def set_jobs(n: int) -> None:
    """`--jobs N`: this command's cores, set in the environment so that every process it starts reads them."""
    if n < 1:
        raise VLBenchError(f"--jobs must be a positive number of cores, got {n}")
    os.environ[JOBS_VAR] = str(n)


def share(workers: int) -> int:
    """The cores each of a sweep's `workers` processes gets: an equal share of `jobs()`, at least one."""
    return max(1, jobs() // max(1, workers))


def pool_workers(units: int, device_type: str = "cpu") -> int:
    """Worker processes for `units` independent units: one per core, no more than units; on a GPU,
    which one process keeps busy, none (1: this process)."""
    return 1 if device_type != "cpu" else max(1, min(units, jobs()))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body on one torch thread (the numbers' one summation order), then restore the setting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(NUMERIC_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _start_worker(initializer: Callable[..., None] | None, args: tuple) -> None:
    import torch

    set_jobs(1)  # a worker is one core: anything it starts stays on it
    torch.set_num_threads(NUMERIC_THREADS)
    if initializer is not None:
        initializer(*args)


class Pool:
    """Independent units on `workers` single-threaded processes (spawned, each loading torch), or, for one
    worker, one after another on one thread in this process: the same numbers either way.

    `initializer(*initargs)` runs once in each worker (here too, for one worker): inputs that every unit
    shares travel once per worker instead of once per unit.
    """

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()):
        self.workers, self.initializer, self.initargs = workers, initializer, initargs

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        """Yield (index, fn(item)) as units finish (in order for one worker); fn's exceptions are raised here."""
        if self.workers <= 1:
            with one_thread():
                if self.initializer is not None:
                    self.initializer(*self.initargs)
                for i, item in enumerate(items):
                    yield i, fn(item)
            return
        # spawn, not fork: forking a process that has loaded torch (threads, CUDA) is unsafe.
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(self.initializer, self.initargs)) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                yield futures[future], future.result()
