"""Land tuning studies run in another checkout (a clean worktree at a commit, as long runs should be): copy each
study's SQLite database (a consistent snapshot, even while its tuner still writes to it), the records of its
trials and, once the study has chosen, its tuned file, into this checkout; then regenerate the report with
`python scripts/tuning_report.py`.

    python scripts/land_study.py /work/trials2 mmdm-synthscenes-tinyvit-minilm-1000 tm-lora-synthscenes-tinyvit-minilm-1000
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
from pathlib import Path

import optuna
import yaml

from vlbench.tuning.studies import STUDY_DIR
from vlbench.tuning.tuned import TUNED_DIR, Target

RECORDS = Path("results") / "tuning" / "records"


def land(source: Path, name: str, into: Path = Path(".")) -> str:
    """Copy study `name` from checkout `source` into checkout `into`; one line saying what was copied."""
    db, out = source / STUDY_DIR / f"{name}.db", into / STUDY_DIR / f"{name}.db"
    if not db.is_file():
        raise SystemExit(f"no study {name} in {source / STUDY_DIR}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as a, sqlite3.connect(out) as b:
        a.backup(b)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out}")
    records = [t.user_attrs["record"] for t in study.trials if t.user_attrs.get("record")]
    (into / RECORDS).mkdir(parents=True, exist_ok=True)
    for run_id in records:
        shutil.copy2(source / RECORDS / f"{run_id}.json", into / RECORDS / f"{run_id}.json")
    tuned = [p for p in sorted((source / TUNED_DIR).glob("**/*.yaml")) if _chosen_by(p, source) == name]
    for path in tuned:
        (into / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, into / path.relative_to(source))
    return (f"{name}: {len(study.trials)} trials, {len(records)} records, "
            f"{'tuned file ' + str(tuned[0].relative_to(source)) if tuned else 'no tuned file yet'}")


def _chosen_by(path: Path, source: Path) -> str | None:
    """The study whose choice the tuned file at `path` is: the one it names, where the file sits at its target's path."""
    choice = yaml.safe_load(path.read_text())
    target = Target(choice["condenser"], choice["budget"], choice["dataset"], choice["backbone"],
                    choice.get("dataset_options", {}), choice.get("backbone_options", {}), choice.get("protocol", {}))
    named = (choice.get("tuning") or {}).get("study")
    return named if named == target.name and source / target.tuned_file == path else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the checkout the studies ran in")
    parser.add_argument("studies", nargs="+", help="study names (results/tuning/studies/NAME.db)")
    args = parser.parse_args(argv)
    for name in args.studies:
        print(land(args.source, name))


if __name__ == "__main__":
    main()
