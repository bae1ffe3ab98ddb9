"""Rerun the run a record describes and compare it with the record, model by model, exactly.

The rerun is the record's spec with the record's condenser config (the run it describes, even where
defaults moved since), by this checkout's code in a fresh temporary cache, so that nothing an
earlier run left in a cache (an expert buffer built by older code) is reused; `cache` reuses one
instead. `at_commit` runs the record's own commit instead: its `vlbench run`, from a temporary git
worktree. On a mismatch the first stage whose artifact hash differs says where the two runs part:
the data, the images, the text features, a shared stage (expert buffer, reference model, ...), the
condensed set; where every hash agrees, the evaluation itself differs.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from vlbench.core import RunSpec, VLBenchError
from vlbench.provenance import SOURCE_DIR
from vlbench.board.records import ResultsStore, RunRecord, read_record

#: Where a run id is looked up (relative to the working directory), besides a record file's path.
RECORD_DIRS = ("results", "runs")
#: Stages hashed before the shared ones (which come next, by name) and the condensed set (last).
INPUT_STAGES = ("data", "images", "text_features")


def find_record(ref: str) -> tuple[RunRecord, Path]:
    """A record by file path, or by run id under results/ (any records/ below it) or runs/."""
    path = Path(ref)
    if not path.is_file():
        found = [p for d in RECORD_DIRS for p in sorted(Path(d).glob(f"**/records/{ref}.json"))] if "/" not in ref else []
        if not found:
            raise VLBenchError(f"no record {ref!r}: give a record file, or the run id of one under "
                               f"{' or '.join(d + '/' for d in RECORD_DIRS)}")
        path = found[0]
    return read_record(path, ("spec", "metrics")), path


def spec_of(record: RunRecord, data_root: str | None = None) -> RunSpec:
    """The record's run: its spec, with its condenser's recorded config as options."""
    spec = {**record["spec"], "data_root": data_root,
            "condenser_options": {**record["spec"]["condenser_options"], **record["condenser"]["config"]}}
    return RunSpec.from_dict(spec)


@dataclass
class Comparison:
    original: RunRecord
    rerun: RunRecord

    @property
    def matches(self) -> bool:
        return self.original["metrics"]["per_seed"] == self.rerun["metrics"]["per_seed"]

    def first_difference(self) -> tuple[str, str | None, str | None] | None:
        """(stage, recorded hash, rerun's hash) of the first stage whose artifacts differ; None if none does."""
        a, b = _hashes(self.original), _hashes(self.rerun)
        shared = sorted((set(a) | set(b)) - {*INPUT_STAGES, "condensed"})
        for stage in [*INPUT_STAGES, *shared, "condensed"]:
            if stage in a and stage in b and a[stage] != b[stage]:
                return stage, a[stage], b[stage]
        return None

    def summary(self) -> str:
        """One line: matches, or where it parts from the record."""
        run_id, n = self.original.run_id, len(self.original["metrics"]["per_seed"])
        if self.matches:
            return (f"reproduces {run_id} exactly: the same metrics for all {n} evaluation model{'s' * (n > 1)} "
                    f"(mean recall {self.rerun.mean_recall[0]:.2f})")
        recorded, now = (", ".join(f"{m['mean']:.2f}" for m in r["metrics"]["per_seed"]) for r in (self.original, self.rerun))
        line = f"DOES NOT REPRODUCE {run_id}: per-model mean recall {recorded} recorded, {now} now; "
        differs = self.first_difference()
        if differs:
            stage, old, new = differs
            return line + f"first artifact that differs: {stage} (recorded {_short(old)}, now {_short(new)})"
        if not self.original.get("artifacts"):
            return line + "the record carries no artifact hashes (made before vlbench recorded them): no stage can be named"
        return line + "every artifact both records hash is equal: the evaluation differs"


def _hashes(record: RunRecord) -> dict[str, str | None]:
    return {"data": record["dataset"]["fingerprint"], **(record.get("artifacts") or {})}


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "not hashed"


@contextlib.contextmanager
def _cache(directory: Path) -> Iterator[None]:
    old = os.environ.get("VLBENCH_CACHE")
    os.environ["VLBENCH_CACHE"] = str(directory)
    try:
        yield
    finally:
        if old is None:
            del os.environ["VLBENCH_CACHE"]
        else:
            os.environ["VLBENCH_CACHE"] = old


def reproduce(record: RunRecord, cache: Path | str | None = None, data_root: str | None = None,
              at_commit: bool = False, results: Path | str | None = None, progress: bool = True) -> Comparison:
    """Rerun `record`'s run (in `cache`; None: a fresh temporary one) into `results` (None: a temporary
    directory) and compare."""
    spec = spec_of(record, data_root)
    with tempfile.TemporaryDirectory(prefix="vlbench-reproduce-") as tmp:
        cache_root = Path(cache).expanduser() if cache else Path(tmp) / "cache"
        out = Path(results).expanduser() if results else Path(tmp) / "results"
        if at_commit:
            rerun = _run_at_commit(record, spec, cache_root, out, Path(tmp))
        else:
            from vlbench.runner import run

            with _cache(cache_root):
                rerun = run(spec, out, progress=progress, allow_dirty=True)
    return Comparison(record, rerun)


def _run_at_commit(record: RunRecord, spec: RunSpec, cache: Path, results: Path, tmp: Path) -> RunRecord:
    """The record's commit runs its spec with its own `vlbench run`, from a temporary worktree."""
    commit = (record.get("source") or {}).get("commit")
    if not commit:
        raise VLBenchError(f"record {record.run_id} names no commit (it ran outside a git checkout): "
                           "reproduce it with this checkout's code, without --at-commit")
    worktree = tmp / "source"
    added = subprocess.run(["git", "-C", str(SOURCE_DIR), "worktree", "add", "--detach", str(worktree), commit],
                           capture_output=True, text=True)
    if added.returncode:
        raise VLBenchError(f"cannot check out commit {commit[:12]} of record {record.run_id} "
                           f"({added.stderr.strip().splitlines()[-1] if added.stderr.strip() else 'git failed'}): "
                           "fetch it into this checkout first")
    try:
        # The first-party plugins are the package vlbench_plugins, kept in plugins/ (pyproject's package-dir).
        (worktree / "vlbench_plugins").symlink_to("plugins")
        config = tmp / "run.yaml"
        config.write_text(yaml.safe_dump({k: v for k, v in spec.to_dict().items() if k != "data_root" or v}))
        env = {**os.environ, "PYTHONPATH": str(worktree), "VLBENCH_CACHE": str(cache)}
        command = [sys.executable, "-c", "import sys; from vlbench.cli import main; sys.exit(main())",
                   "run", "--config", str(config), "--results", str(results)]
        if subprocess.run(command, cwd=worktree, env=env).returncode:
            raise VLBenchError(f"commit {commit[:12]}'s `vlbench run` failed on record {record.run_id}'s spec (above)")
    finally:
        subprocess.run(["git", "-C", str(SOURCE_DIR), "worktree", "remove", "--force", str(worktree)], capture_output=True)
    return ResultsStore(results).records()[-1]
