"""The tuning ruleset: every method gets the same declared search budget at every (data set, budget).

A condenser declares, on its options, the values a tuner may try (`option(..., search=LogUniform(...))`,
vlbench/spaces.py). `vlbench tune` spends the ruleset's trials on that space, each trial an ordinary run
on the val split at a condensing seed the board never uses, executed by the sweep machinery (in this
process, a local pool, or SLURM). An Optuna study (seeded TPE, the declared defaults as its first
trial) in SQLite under results/tuning/studies keeps every trial, so a killed study resumes where it
stopped. The best trial's options go to a file under configs/tuned/ (vlbench/tuning/tuned.py), which a
run or sweep uses with `tuned: true`. Nothing else about a method is tuned: the protocol is everyone's.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from vlbench.core import RunSpec, TrainProtocol, VLBenchError, stable_hash
from vlbench.board.records import ResultsStore, read_record
from vlbench.sweep.plan import Plan, Sweep, make_plan, run_plan
from vlbench.tuning.tuned import Target, canonical, declared_space, write_choice

if TYPE_CHECKING:
    import optuna

    from vlbench.sweep.executors import Executor


@dataclass(frozen=True)
class Ruleset:
    """What every method gets (docs/protocol.md, "Tuning ruleset")."""

    version: int = 1
    trials: int = 8  # per (method, data set, backbone, budget); the declared defaults are the first
    evals: int = 3  # evaluation models per trial
    seed: int = 100  # condensing seed of every trial: the board uses 0-2, so a choice cannot leak through it
    split: str = "val"
    startup_trials: int = 4  # TPE samples at random (after the defaults) before it models the results


RULESET = Ruleset()
STUDY_DIR = Path("results") / "tuning" / "studies"


def trial_spec(target: Target, options: dict[str, Any], data_root: str | None = None,
               ruleset: Ruleset = RULESET) -> RunSpec:
    """A trial: an ordinary run on val at the ruleset's seed and number of evaluation models."""
    return RunSpec(condenser=target.condenser, budget=target.budget, dataset=target.dataset,
                   backbone=target.backbone, data_root=data_root, evals=ruleset.evals, seed=ruleset.seed,
                   split=ruleset.split, condenser_options=options, backbone_options=target.backbone_options,
                   dataset_options=target.dataset_options, protocol=TrainProtocol(**target.protocol))


# ----------------------------------------------------------------------------- the study


def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise VLBenchError("vlbench tune needs optuna: pip install 'optuna>=4'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # vlbench prints one line per trial itself
    return optuna


def default_storage_file(target: Target) -> Path:
    return STUDY_DIR / f"{target.name}.db"


def open_study(target: Target, storage: str | None = None, ruleset: Ruleset = RULESET) -> optuna.Study:
    """The target's study, created or resumed; SQLite under results/tuning/studies unless `storage` names one."""
    optuna = _optuna()
    if storage is None:
        STUDY_DIR.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{default_storage_file(target)}"
    try:
        study = optuna.create_study(study_name=target.name, storage=storage, direction="maximize", load_if_exists=True)
    except Exception as e:  # a storage URL that cannot be opened
        raise VLBenchError(f"cannot open the tuning study {target.name} in {storage}: {str(e).splitlines()[0]}") from e
    # Seeded by the target, and by how many trials a resumed study holds: a process that resumes a killed
    # study must not replay the random draws of the one that died (its first draw would repeat a tried setting).
    resumed_at = len(study.trials)
    study.sampler = optuna.samplers.TPESampler(
        seed=int(stable_hash(target.name if not resumed_at else [target.name, resumed_at], 8), 16),
        n_startup_trials=ruleset.startup_trials, multivariate=True,
        constant_liar=True)  # trials asked together do not all land on one point
    return study


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that spent the budget: finished ones, and those whose run failed (a diverging setting is a
    result); not those interrupted by a killed process, which run again."""
    states = _optuna().trial.TrialState
    return [t for t in study.trials
            if t.state == states.COMPLETE or (t.state == states.FAIL and not t.user_attrs.get("interrupted"))]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str) -> bool:
    """Whether the process that asked a trial still runs (one on another host is assumed to)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    if pid == str(os.getpid()):  # this process asks trials only inside tune(), which tells them all
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left running by a process that died: marked interrupted (not counted) and asked again."""
    optuna = _optuna()
    n = 0
    for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        if _alive(t.user_attrs.get("owner", "")):
            continue
        trial = optuna.trial.Trial(study, t._trial_id)  # noqa: SLF001 (a running trial of a dead process)
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        n += 1
    return n


@dataclass
class TrialResult:
    trial: optuna.Trial
    params: dict[str, Any]
    value: float | None  # mean val recall; None: the run failed
    message: str


def tune(target: Target, *, executor: Executor, width: int = 1, trials: int | None = None, storage: str | None = None,
         results: str | Path = "results/tuning", data_root: str | None = None, ruleset: Ruleset = RULESET,
         allow_dirty: bool = False, echo: Callable[[str], None] = print) -> optuna.Study:
    """Run the target's study until `trials` (default: the ruleset's) count, `width` at a time; then write
    the best trial's options to the target's tuned config (none when every trial failed)."""
    optuna = _optuna()
    space, defaults = declared_space(target.condenser)
    if not space:
        raise VLBenchError(f"{target.condenser!r} declares no search space: under the ruleset it runs at its "
                           "defaults (0 trials); there is nothing to tune")
    trials = ruleset.trials if trials is None else trials

    def sweep(specs: list[RunSpec]) -> Sweep:  # one-run grid entries: a spec holds no list a grid reads as an axis
        return Sweep(name=f"tune-{target.name}", grid=[{k: v for k, v in s.to_dict().items() if v is not None}
                                                       for s in specs], results=str(results), allow_dirty=allow_dirty)

    # one line for a target that cannot run (unknown data, a budget beyond the data), before a trial is spent
    make_plan(sweep([trial_spec(target, {}, data_root, ruleset)]))
    study = open_study(target, storage, ruleset)
    study.set_user_attr("ruleset", dataclasses.asdict(ruleset))
    study.set_user_attr("space", {name: str(s) for name, s in space.items()})
    if requeued := requeue_interrupted(study):
        echo(f"{requeued} trial(s) interrupted by a killed study run again")
    if not study.trials:  # the method's own choice is one of its trials
        study.enqueue_trial({name: defaults[name] for name in space}, user_attrs={"defaults": True})
    while (left := trials - len(counted(study))) > 0:
        batch = [study.ask() for _ in range(min(width, left))]
        for trial in batch:
            trial.set_user_attr("owner", _owner())
        params = [{name: s.suggest(trial, name) for name, s in space.items()} for trial in batch]
        specs = [trial_spec(target, canonical(p, defaults), data_root, ruleset) for p in params]
        for result in _run_trials(batch, params, specs, make_plan(sweep(specs)), executor):
            state = optuna.trial.TrialState.COMPLETE if result.value is not None else optuna.trial.TrialState.FAIL
            study.tell(result.trial, result.value, state=state)
            echo(f"trial {result.trial.number + 1} ({len(counted(study))} of {trials}): {result.message}  "
                 + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.params.items()))
    if not any(t.value is not None for t in counted(study)):
        echo(f"every trial of {study.study_name} failed: no tuned config written (the errors are in the study)")
        return study
    best = best_trial(study)
    write_choice(target, canonical(best.params, defaults), {
        "study": study.study_name, "ruleset": ruleset.version, "trials": len(counted(study)),
        "ruleset_trials": ruleset.trials, "seed": ruleset.seed, "evals": ruleset.evals, "split": ruleset.split,
        "best_trial": best.number + 1, "val_mean_recall": round(best.value, 3), "record": best.user_attrs.get("record"),
        "params": dict(sorted(best.params.items())), "space": {name: str(s) for name, s in space.items()}})
    return study


def _run_trials(batch: list[optuna.Trial], params: list[dict[str, Any]], specs: list[RunSpec], plan: Plan,
                executor: Executor) -> list[TrialResult]:
    """Execute a batch of trials planned as one sweep (their shared stages first, then the runs), read their records."""
    outcomes = run_plan(plan, executor, echo=lambda line: None)
    store = ResultsStore(plan.runs[0].results)
    tasks = {stable_hash(t.spec.condenser_options): t for t in plan.runs}  # equal trials are one run
    out = []
    for trial, p, spec in zip(batch, params, specs):
        task = tasks[stable_hash(spec.condenser_options)]
        found = store.find(task.identity)
        if found:
            mean, std = found[-1].mean_recall
            trial.set_user_attr("record", found[-1].run_id)
            out.append(TrialResult(trial, p, mean, f"mean val recall {mean:.1f} ± {std:.1f} (record {found[-1].run_id})"))
        else:
            message = outcomes[task.key].message if task.key in outcomes else "no record"
            trial.set_user_attr("error", message)
            out.append(TrialResult(trial, p, None, f"failed: {message}"))
    return out


def best_of(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The best finished trial; ties go to the earlier trial. None when every trial failed."""
    done = [t for t in trials if t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    best = best_of(counted(study))
    if best is None:
        raise VLBenchError(f"study {study.study_name} has no finished trial: every trial failed")
    return best


@dataclass(frozen=True)
class StoredStudy:
    """A study as the reports read it: its counted trials, the run record of each trial that made one, and
    what it tuned (data set, backbone id, budget, condenser; read from those records, None if it has none)."""

    name: str
    trials: list[optuna.trial.FrozenTrial]
    records: dict[int, dict[str, Any]]  # by trial number
    target: tuple[str, str, int, str] | None


def stored_studies(directory: Path) -> list[StoredStudy]:
    """Every study in the SQLite files of `directory` (results/tuning/studies), its trials' records read from
    the `records/` beside it."""
    optuna = _optuna()
    found = []
    for db in sorted(Path(directory).glob("*.db")):
        storage = f"sqlite:///{db}"
        for summary in optuna.get_all_study_summaries(storage):
            trials = counted(optuna.load_study(study_name=summary.study_name, storage=storage))
            records = {t.number: dict(read_record(Path(directory).parent / "records" / f"{t.user_attrs['record']}.json", ()))
                       for t in trials if "record" in t.user_attrs}
            r = next(iter(records.values()), None)
            target = None if r is None else (r["dataset"]["name"], r["backbone"]["id"], r["budget"], r["condenser"]["name"])
            found.append(StoredStudy(summary.study_name, trials, records, target))
    return found
