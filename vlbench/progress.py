"""Progress: every piece of long work tells one reporter per process how far it is; the reporter shows it.

Work opens a bar (`bar(total, desc, unit)`; a condenser calls `ctx.progress(total, desc)`), advances it
(`update(n)`) and closes it (a context manager); a run tells the reporter its stages. Where it shows:

- a terminal (`TerminalLine`): one line, redrawn in place, padded over what it drew before:
      run tm-lora@100: condense · trajectory matching 40/100 it · eval 0/5 · ETA 6m
- anything else (`LogLines`: a sweep's log, CI, `> file`): the same text as plain lines through
  `logging` (logger `vlbench.progress`): one when a stage or a bar starts, then at most one per
  `interval_s`; never a carriage return. It is the default, so a library user who configured no
  logging sees nothing.
- nowhere (`Reporter`, `quiet()`).

The ETA adds what is left of the current stage to the expected time of the stages after it:

- the current stage: what its live bar says is left, or, when earlier records of the same run (the
  same effective condenser config) say how long the stage took, that time minus what has elapsed
  (the larger of the two);
- evaluation: every model trains the same number of steps, so once the first model's bar shows
  a rate, the models left times their steps at that rate;
- a stage of unknown length counts as nothing, and the line then says `ETA ≥ ...`.
"""
from __future__ import annotations

import logging
import shutil
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, TextIO

if TYPE_CHECKING:
    from vlbench.board.records import RunRecord

STAGES = ("prepare", "condense", "evaluate")
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the ETA


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


def same_run(records: Iterable[RunRecord], shape: tuple) -> list[RunRecord]:
    """The records (each run once) of runs with this `run_shape`: the same condenser and effective config,
    budget, backbone, data set and evaluations. A record made with other options is another run."""
    return list({r.run_id: r for r in records if r.shape == shape}.values())


def expected_stages(records: Iterable[RunRecord]) -> dict[str, float]:
    """The median wall time of each stage over these records (warm caches: the one-off work is in README.md)."""
    walls: dict[str, list[float]] = {}
    for r in records:
        for name, seconds in r.stage_seconds.items():
            walls.setdefault(name, []).append(seconds)
    return {name: statistics.median(w) for name, w in walls.items()}


def history(results_dirs: Iterable[Path | str]) -> list[RunRecord]:
    """Every record of these results directories (each directory once), for `same_run`."""
    from vlbench.board.records import ResultsStore

    return [r for d in dict.fromkeys(str(d) for d in results_dirs) for r in ResultsStore(Path(d)).records()]


# ----------------------------------------------------------------------------- bars and the run line


class Bar:
    """One piece of work of known length: `update(n)` as it advances, `close()` (or a `with` block) when done."""

    def __init__(self, reporter: Reporter, total: int, desc: str, unit: str = "it", initial: int = 0):
        self.reporter, self.total, self.desc, self.unit = reporter, total, desc, unit
        self.n = self.initial = initial  # a resumed piece of work starts at `initial`
        self.note = ""  # what else to show (a loss, say)
        self.started = time.perf_counter()
        reporter.opened(self)

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.n += n
        if note is not None:
            self.note = note
        self.reporter.updated(self)

    def close(self) -> None:
        self.reporter.closed(self)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def rate(self) -> float:
        """Units per second since it opened (what it started with not counted)."""
        return (self.n - self.initial) / max(time.perf_counter() - self.started, 1e-9)

    def text(self, desc: bool = True) -> str:
        return " ".join(part for part in (self.desc if desc else "", f"{self.n}/{self.total} {self.unit}", self.note)
                        if part)


class RunLine:
    """Where a run is (its stage; in evaluation, the models done) and the text of its line, given its live bar."""

    def __init__(self, label: str, evals: int, expected: Mapping[str, float] | None = None):
        self.label, self.evals, self.steps = label, evals, 0
        self.times = {name: StageTime(name, (expected or {}).get(name)) for name in STAGES}
        self.current, self.model, self.started = STAGES[0], 0, time.perf_counter()

    def stage(self, name: str) -> None:
        self.current, self.started = name, time.perf_counter()

    def eval_model(self, k: int, steps: int) -> None:
        """`k` models done; each trains `steps` steps in this process (0: in workers, where no bar is seen)."""
        self.model, self.steps = k, steps

    def text(self, live: Bar | None) -> str:
        now = self.times[self.current]
        now.elapsed = time.perf_counter() - self.started
        evaluating = self.current == "evaluate"
        parts = [f"eval {self.model}/{self.evals}" if evaluating else self.current]
        now.live_left, now.live_is_whole = None, False
        if live is not None:
            parts.append(live.text(desc=not evaluating))
            # each evaluation model trains the same steps: the models after this one take as long
            after = (self.evals - self.model - 1) * self.steps if evaluating else 0
            now.live_left = units_left(live.n, live.total, live.rate, after)
            now.live_is_whole = evaluating and now.live_left is not None  # before a rate it is no estimate
        if not evaluating:
            parts.append(f"eval 0/{self.evals}")
        left, complete = eta([self.times[n] for n in STAGES[STAGES.index(self.current):]])
        if left or complete:  # "ETA ≥0s" says nothing
            parts.append(format_eta(left, complete))
        return f"run {self.label}: {' · '.join(parts)}"


class Reporter:
    """What every bar and stage is told to. This base keeps the state (the open bars, the run's line) and
    shows nothing; a subclass shows `line()` in `show(new)` (`new`: a bar or stage started)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # bars come and go in worker threads too
        self.bars: list[Bar] = []
        self.run: RunLine | None = None

    def bar(self, total: int, desc: str, unit: str = "it", initial: int = 0) -> Bar:
        return Bar(self, total, desc, unit, initial)

    def opened(self, bar: Bar) -> None:
        with self.lock:
            self.bars.append(bar)
            self.show(new=True)

    def updated(self, bar: Bar) -> None:
        with self.lock:
            self.show(new=False)

    def closed(self, bar: Bar) -> None:
        with self.lock:
            if bar in self.bars:
                self.bars.remove(bar)
            self.show(new=False)

    @contextmanager
    def running(self, label: str, evals: int, expected: Mapping[str, float] | None = None) -> Iterator[None]:
        """A run's line while the block runs; `stage` and `eval_model` move it on."""
        with self.lock:
            self.run = RunLine(label, evals, expected)
        try:
            yield
        finally:
            with self.lock:
                self.run = None
                self.show(new=False)

    def stage(self, name: str) -> None:
        with self.lock:
            if self.run is not None:
                self.run.stage(name)
                self.show(new=True)

    def eval_model(self, k: int, steps: int) -> None:
        with self.lock:
            if self.run is not None:
                self.run.eval_model(k, steps)
                self.show(new=False)

    def live(self) -> Bar | None:
        """The newest open bar (the innermost work going on)."""
        return self.bars[-1] if self.bars else None

    def line(self) -> str:
        """The run's line, or the live bar's text outside a run; "" when nothing goes on."""
        with self.lock:
            live = self.live()
            return self.run.text(live) if self.run else live.text() if live else ""

    def show(self, new: bool) -> None:
        """Show `line()` (a subclass's job)."""

    def write(self, message: str, stream: TextIO) -> None:
        """Write a message (a log record) to `stream`, around whatever the reporter draws there."""
        stream.write(message + "\n")
        stream.flush()

    def close(self) -> None:
        """Leave nothing drawn behind (a subclass's job)."""


class LogLines(Reporter):
    """Progress as plain log lines: one when a bar or a stage starts, then at most one per `interval_s`."""

    def __init__(self, interval_s: float = 30.0):
        super().__init__()
        self.interval_s, self.last = interval_s, -float("inf")

    def show(self, new: bool) -> None:
        now = time.perf_counter()
        if (new or now - self.last >= self.interval_s) and (text := self.line()):
            self.last = now
            log.info(text)


class TerminalLine(Reporter):
    """Progress as one line on a terminal, redrawn in place at most every `min_interval_s` (and every
    `POLL_S` during a run, for the ETA); messages print above it."""

    POLL_S = 0.5

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.1):
        super().__init__()
        self.stream, self.min_interval_s = stream or sys.stderr, min_interval_s
        self.drawn, self.last = 0, -float("inf")  # the width of what is on the line now, when it was drawn

    def show(self, new: bool) -> None:
        now = time.perf_counter()
        if new or now - self.last >= self.min_interval_s or not (self.bars or self.run):
            self.last = now
            self.draw(self.line())

    def draw(self, text: str) -> None:
        text = text[:shutil.get_terminal_size().columns - 1]  # a wrapped line could not be redrawn in place
        # padded over the rest of the earlier line: a shorter line leaves none of a longer one behind
        self.stream.write("\r" + text.ljust(self.drawn) + ("\r" + text if len(text) < self.drawn else ""))
        self.stream.flush()
        self.drawn = len(text)

    def write(self, message: str, stream: TextIO) -> None:
        with self.lock:
            text = self.line()
            self.draw("")  # the line cleared, the message in its place, the line below it
            super().write(message, stream)
            self.draw(text)

    def close(self) -> None:
        with self.lock:
            self.draw("")

    @contextmanager
    def running(self, label: str, evals: int, expected: Mapping[str, float] | None = None) -> Iterator[None]:
        stop = threading.Event()

        def poll() -> None:  # the ETA and elapsed time move between a slow stage's updates too
            while not stop.wait(self.POLL_S):
                with self.lock:
                    self.draw(self.line())

        with super().running(label, evals, expected):
            thread = threading.Thread(target=poll, daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()


_reporter: Reporter = LogLines()


def reporter() -> Reporter:
    """This process's reporter."""
    return _reporter


def use(new: Reporter) -> Reporter:
    """Make `new` this process's reporter; returns the one it replaces."""
    global _reporter
    old, _reporter = _reporter, new
    return old


@contextmanager
def quiet() -> Iterator[None]:
    """No progress shown in the block (messages still go to `logging`)."""
    old = use(Reporter())
    try:
        yield
    finally:
        use(old)


def bar(total: int, desc: str, unit: str = "it", initial: int = 0) -> Bar:
    """A progress bar on this process's reporter: `with bar(100, "trajectory matching") as b: ... b.update()`."""
    return _reporter.bar(total, desc, unit, initial)


def track(items: Iterable[Any], total: int, desc: str, unit: str = "it") -> Iterator[Any]:
    """`items`, one bar step each."""
    with bar(total, desc, unit) as b:
        for item in items:
            yield item
            b.update()


class ReporterHandler(logging.StreamHandler):
    """Log records written through the reporter: above a terminal's progress line, not through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _reporter.write(self.format(record), self.stream)
        except Exception:  # noqa: BLE001 (logging's own contract: a handler never raises)
            self.handleError(record)


#: The loggers whose messages `shown` shows from its level up (vlbench's and the first-party plugins';
#: a third-party plugin logs under "vlbench.NAME" to be among them); every other logger's from WARNING up.
LOGGERS = ("vlbench", "vlbench_plugins")


@contextmanager
def shown(level: str | int = "INFO", stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, vlbench's messages (from `level` up) and its progress show on `stream` (default
    stderr): one handler, a readable format; progress as one line on a terminal, as log lines otherwise."""
    stream = stream or sys.stderr
    handler = ReporterHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    loggers = {name: logging.getLogger(name) for name in LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    mine = TerminalLine(stream) if stream.isatty() else LogLines()
    old = use(mine)
    logging.getLogger().addHandler(handler)
    for logger in loggers.values():
        logger.setLevel(level)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        mine.close()
        use(old)
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
