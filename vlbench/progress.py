"""One progress line per run with an overall ETA, fed by the stages' own progress bars.

    run tm-lora@100: condense · trajectory matching 40/100 it · eval 0/5 · ETA 6m

The stages (prepare: images and caption encoding; condense: the shared stages a condenser builds
and the condensing itself; evaluate: each evaluation model) already draw tqdm bars. The run's line
sits above them and reads them: which bar is live, how far it is, how fast it goes. The ETA adds
what is left of the current stage to the expected time of the stages after it:

- the current stage: what its live bar says is left, or, when an earlier record of the same run
  shape says how long the stage took, that time minus what has elapsed (the larger of the two);
- evaluation: every model trains the same number of steps, so once the first model's bar shows
  a rate, the models left times their steps at that rate;
- a stage of unknown length counts as nothing, and the line then says `ETA ≥ ...`.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tqdm import tqdm

if TYPE_CHECKING:
    from vlbench.core import RunSpec
    from vlbench.board.records import RunRecord

STAGES = ("prepare", "condense", "evaluate")


@dataclass
class StageTime:
    """What is known about one stage's duration (seconds; None: unknown)."""

    name: str
    expected: float | None = None  # its whole length: an earlier record's, or measured rates
    elapsed: float = 0.0  # time spent in it so far
    live_left: float | None = None  # what its live bars say is left
    live_is_whole: bool = False  # the live estimate covers the whole stage (evaluation does; condense may not)


def eta(stages: list[StageTime]) -> tuple[float, bool]:
    """(seconds left in `stages`, the current one first; whether that is an estimate of every stage, or a lower bound)."""
    left, complete = 0.0, True
    for stage in stages:
        guesses = [g for g in (stage.live_left,
                               None if stage.expected is None else max(stage.expected - stage.elapsed, 0.0))
                   if g is not None]
        left += max(guesses, default=0.0)
        complete = complete and (stage.expected is not None or stage.live_is_whole)
    return left, complete


def units_left(done: float, total: float, rate: float, after: float = 0) -> float | None:
    """Seconds to finish a bar at `rate` units per second, and `after` more units; None before it has a rate."""
    return (total - done + after) / rate if rate > 0 else None


def format_eta(seconds: float, complete: bool) -> str:
    s = round(seconds)
    text = f"{s}s" if s < 60 else f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"ETA {'' if complete else '≥'}{text}"


def same_shape(records: Iterable[RunRecord], spec: RunSpec) -> list[RunRecord]:
    """The records (each run once) of runs shaped like `spec`: condenser, budget, backbone, data set, evals."""
    want = (spec.condenser, spec.budget, spec.backbone, spec.dataset, spec.evals)
    return list({r.run_id: r for r in records if r.shape == want}.values())


def expected_stages(records: Iterable[RunRecord]) -> dict[str, float]:
    """The median wall time of each stage over these records (warm caches: the one-off work is in README.md)."""
    walls: dict[str, list[float]] = {}
    for r in records:
        for name, seconds in r.stage_seconds.items():
            walls.setdefault(name, []).append(seconds)
    return {name: statistics.median(w) for name, w in walls.items()}


def history(results_dirs: Iterable[Path | str]) -> list[RunRecord]:
    """Every record of these results directories (each directory once), for `same_shape`."""
    from vlbench.board.records import ResultsStore

    return [r for d in dict.fromkeys(str(d) for d in results_dirs) for r in ResultsStore(Path(d)).records()]


class RunProgress:
    """The run's line: `stage(name)` when a stage starts, `eval_model(k, steps)` when evaluation model k
    starts, `close()` at the end. Disabled (`enabled=False`), it draws nothing and starts no thread."""

    POLL_S = 0.5

    def __init__(self, label: str, evals: int, expected: dict[str, float] | None = None, enabled: bool = True):
        self.label, self.evals, self.steps, self.enabled = label, evals, 0, enabled
        self.times = {name: StageTime(name, (expected or {}).get(name)) for name in STAGES}
        self.current, self.model, self.started = STAGES[0], 0, time.perf_counter()
        if enabled:
            self.bar = tqdm(total=0, bar_format="{desc}", leave=False, position=0)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def stage(self, name: str) -> None:
        self.current, self.started = name, time.perf_counter()
        self.refresh()

    def eval_model(self, k: int, steps: int) -> None:
        self.model, self.steps = k, steps
        self.refresh()

    def close(self) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.bar.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self.refresh()

    def _live(self) -> tqdm | None:
        """The newest bar with a known length that is not this line (the innermost work going on)."""
        with tqdm.get_lock():  # bars come and go in the run's thread meanwhile
            bars = [b for b in tqdm._instances if b is not self.bar and b.total and not b.disable]
        return max(bars, key=lambda b: b.start_t, default=None)

    def refresh(self) -> None:
        if not self.enabled:
            return
        now = self.times[self.current]
        now.elapsed = time.perf_counter() - self.started
        live = self._live()
        evaluating = self.current == "evaluate"
        parts = [f"eval {self.model}/{self.evals}" if evaluating else self.current]
        now.live_left, now.live_is_whole = None, False
        if live is not None:
            parts.append(f"{'' if evaluating else live.desc} {live.n}/{live.total} {live.unit}".strip())
            rate = (live.n - live.initial) / max(time.time() - live.start_t, 1e-9)  # a resumed bar starts at `initial`
            # each evaluation model trains the same steps: the models after this one take as long
            after = (self.evals - self.model - 1) * self.steps if evaluating else 0
            now.live_left, now.live_is_whole = units_left(live.n, live.total, rate, after), evaluating
        if not evaluating:
            parts.append(f"eval 0/{self.evals}")
        ahead = [self.times[n] for n in STAGES[STAGES.index(self.current):]]
        self.bar.set_description_str(f"run {self.label}: {' · '.join(parts)} · {format_eta(*eta(ahead))}")


def progress_as_log_lines(interval_s: float = 30.0) -> None:
    """Make every tqdm bar of this process write plain lines: one when it starts, then at most one per
    `interval_s`, instead of redrawing itself with carriage returns and cursor moves.

    For output that is not a terminal (a sweep's log, CI, `> file`), where a 300-step bar would otherwise
    write hundreds of updates per evaluation model. Process-wide, so it reaches every bar, plugins' too.
    A bar leaves no final line (the run's summary gives each stage's time).
    """
    if getattr(tqdm, "log_lines", False):  # once per process
        return
    init = tqdm.__init__

    def __init__(self, *args, **kwargs):
        # maxinterval too: tqdm's monitor thread would otherwise redraw a slow bar every 10 s
        init(self, *args, **{**kwargs, "mininterval": interval_s, "maxinterval": interval_s, "leave": False})

    def status_printer(file):
        def print_line(line: str) -> None:
            file.write(line.strip() + "\n")
            file.flush()
        return print_line

    display = tqdm.display

    def display_line(self, msg=None, pos=None):
        return msg != "" and display(self, msg, pos)  # an empty message clears the bar: a log has no screen

    tqdm.__init__ = __init__
    tqdm.status_printer = staticmethod(status_printer)
    tqdm.display = display_line
    tqdm.moveto = tqdm.clear = lambda self, *args, **kwargs: None  # nothing to move on or clear either
    tqdm.log_lines = True
