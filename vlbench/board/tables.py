"""The leaderboard's model: its tables, built from run records as plain values. The renderers format them
(vlbench/board/markdown.py, html.py; CSV and JSON in render.py).

Only comparable results share a table: one table per data set (name and fingerprint), backbone
and training protocol, for one evaluation split (test by default; val records are for choosing
and never appear on the test board). Within a table, one row per (condenser, its config, budget):
the newest record of each condensing seed counts. A row's mean and ± are over condensing seeds
(each seed's value is the mean of its evaluation models); a single-seed row falls back to the
spread over its evaluation models. Every format renders the same `Table`s, so they cannot disagree.

Those tables hold results whose evaluation models are of the backbone the set was condensed on.
A record with an `eval_backbone` block naming another backbone (a set condensed on one backbone,
evaluated by fresh models of another) goes to the data set's cross-architecture table instead
(`CrossTable`, one per data set, protocol and split): rows condenser @ budget @ condensed-on
backbone, columns the evaluation backbones, each cell mean recall ± std over condensing seeds,
the same-architecture cell (from the records of the per-backbone table) included for reference.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from vlbench.board.records import is_reference
from vlbench.core import stable_hash

BASELINE = "random"  # the "gain" column: mean recall minus random's at the same budget
# vlbench.metrics.METRIC_KEYS, not imported so that rendering a leaderboard does not load torch.
RECALL_KEYS = ("tr@1", "tr@5", "tr@10", "ir@1", "ir@5", "ir@10", "mean")
#: An evaluation model collapsed when its mean recall is below this fraction of its row's upper-quartile model:
#: its training diverged to chance (kcenter@1000: 0.7-2.7 beside siblings at 61-79), and the row's mean
#: averages it in. Relative to the row, so that it needs no split size and holds on every data set; the upper
#: quartile, so that a row where up to three quarters of the models collapsed is still marked.
COLLAPSE_FRACTION = 0.25


@dataclass
class Table:
    """The comparable rows of one data set, backbone, protocol and split: by budget, best first; references last."""

    dataset: str
    fingerprint: str
    backbone: str
    protocol: str
    split: str
    rows: list[dict[str, Any]]  # see `_row`
    backbone_options: dict[str, Any] = field(default_factory=dict)  # what the id's hash suffix stands for

    @property
    def heading(self) -> str:
        split = "" if self.split == "test" else f" · {self.split} split"
        options = ", ".join(f"{k}: {v}" for k, v in sorted(self.backbone_options.items()))
        backbone = f"{self.backbone} ({options})" if options else self.backbone
        return f"{self.dataset} (data {self.fingerprint[:8]}) · backbone {backbone} · protocol {self.protocol}{split}"


def evaluated_on(record: dict[str, Any]) -> str:
    """Id of the backbone whose fresh models were evaluated: the `eval_backbone` block's, else the condensing one's."""
    return (record.get("eval_backbone") or record["backbone"])["id"]


def same_architecture(record: dict[str, Any]) -> bool:
    return evaluated_on(record) == record["backbone"]["id"]


def split_of(record: dict[str, Any]) -> str:
    return record.get("split") or record.get("spec", {}).get("split") or "test"


def config_hash(record: dict[str, Any]) -> str:
    return record["condenser"].get("config_hash") or stable_hash(record["condenser"].get("config", {}), 6)


def table_key(r: dict[str, Any]) -> tuple:
    """The per-backbone table a record belongs to: comparable results (data set, its fingerprint, backbone, protocol)."""
    return r["dataset"]["name"], r["dataset"]["fingerprint"], r["backbone"]["id"], r["protocol"]["id"]


def _keys(r: dict[str, Any]) -> tuple[tuple, tuple]:
    """(table, row) of a record: comparable results share a table; a row is a condenser config at a budget."""
    return table_key(r), (is_reference(r), r["budget"], r["condenser"]["name"], config_hash(r))


def with_min_seeds(records: list[dict[str, Any]], min_seeds: int) -> list[dict[str, Any]]:
    """The records of rows that have at least `min_seeds` condensing seeds (the committed board uses 3)."""
    def key(r: dict[str, Any]) -> tuple:
        return split_of(r), evaluated_on(r), *_keys(r)

    seeds: dict[tuple, set] = {}
    for r in records:
        seeds.setdefault(key(r), set()).add(r.get("spec", {}).get("seed"))
    return [r for r in records if len(seeds[key(r)]) >= min_seeds]


def tables(records: list[dict[str, Any]], split: str = "test") -> list[Table]:
    groups: dict[tuple, dict[tuple, dict[Any, dict]]] = {}
    backbone_options: dict[tuple, dict[str, Any]] = {}  # one per table: the backbone id hashes them
    for r in sorted(records, key=lambda r: (r["created"], r["run_id"])):
        if split_of(r) != split or not same_architecture(r):
            continue
        table_key, row_key = _keys(r)
        backbone_options[table_key] = r["backbone"].get("config") or {}
        groups.setdefault(table_key, {}).setdefault(row_key, {})[r.get("spec", {}).get("seed")] = r  # later = newer
    out = []
    for key, rows in sorted(groups.items()):
        built = [_row(list(runs.values())) for _, runs in sorted(rows.items())]
        references = [row for row in built if row["reference"]]
        full_mean = references[-1]["mean_mean"] if references else None  # the largest reference budget
        for row in built:
            row["recovery_pct"] = 100 * row["mean_mean"] / full_mean if full_mean else None
        _compare(built)
        out.append(Table(*key, split, sorted(built, key=lambda r: (r["reference"], r["budget"], -r["mean_mean"])),
                         backbone_options[key]))
    return out


@dataclass
class CrossTable:
    """One data set's sets evaluated across backbones (protocol and split fixed): rows condenser @ budget
    @ condensed-on backbone (None for the full-data reference), `cells[evaluation backbone]`."""

    dataset: str
    fingerprint: str
    protocol: str
    split: str
    backbones: list[str]  # the columns: evaluation backbone ids
    rows: list[dict[str, Any]]  # condenser, version, config, config_hash, trials, reference, budget, condensed_on, cells

    @property
    def heading(self) -> str:
        split = "" if self.split == "test" else f" · {self.split} split"
        return f"{self.dataset} (data {self.fingerprint[:8]}) · cross-architecture · protocol {self.protocol}{split}"


def cross_tables(records: list[dict[str, Any]], split: str = "test") -> list[CrossTable]:
    """A cross-architecture table per data set and protocol that has a record evaluated on another backbone
    than its set was condensed on: the rows such records belong to, plus the full-data reference."""
    groups: dict[tuple, dict[tuple, dict[str, dict[Any, dict]]]] = {}
    for r in sorted(records, key=lambda r: (r["created"], r["run_id"])):
        if split_of(r) != split:
            continue
        table_key = (r["dataset"]["name"], r["dataset"]["fingerprint"], r["protocol"]["id"])
        reference = is_reference(r)  # nothing is condensed: one row, a cell per backbone trained on all pairs
        row_key = (reference, r["budget"], r["condenser"]["name"], config_hash(r), "" if reference else r["backbone"]["id"])
        runs = groups.setdefault(table_key, {}).setdefault(row_key, {}).setdefault(evaluated_on(r), {})
        runs[r.get("spec", {}).get("seed")] = r  # later = newer
    out = []
    for (dataset, fingerprint, protocol), rows in sorted(groups.items()):
        crossed = [key for key, cells in rows.items() if not key[0] and set(cells) != {key[4]}]
        if not crossed:
            continue
        backbones = sorted({b for key in crossed for b in (key[4], *rows[key])})
        built = []
        for key in sorted(crossed) + sorted(k for k in rows if k[0]):
            cells = {b: _cell(list(runs.values())) for b, runs in rows[key].items() if b in backbones}
            if cells:
                built.append(_cross_row(key, cells, rows[key]))
        out.append(CrossTable(dataset, fingerprint, protocol, split, backbones, built))
    return out


def _cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    mean, std, over = _spread(runs)
    return {"mean": mean["mean"], "std": std["mean"], "std_over": over, "collapsed": collapsed(runs),
            "seeds": sorted(run.get("spec", {}).get("seed", 0) for run in runs), "run_ids": [run["run_id"] for run in runs]}


def _cross_row(key: tuple, cells: dict[str, dict[str, Any]], runs: dict[str, dict[Any, dict]]) -> dict[str, Any]:
    reference, budget, condenser, config, condensed_on = key
    newest = max((r for by_seed in runs.values() for r in by_seed.values()), key=lambda r: (r["created"], r["run_id"]))
    return {"condenser": condenser, "version": newest["condenser"]["version"], "config": newest["condenser"].get("config", {}),
            "config_hash": config, "trials": trials(newest), "reference": reference, "budget": budget,
            "condensed_on": condensed_on or None, "cells": cells}


def pooled_std(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The pooled std over condensing seeds of two rows' mean recall: the margin of the tie rule."""
    return math.sqrt((a["mean_std"] ** 2 + b["mean_std"] ** 2) / 2)


def _compare(rows: list[dict[str, Any]]) -> None:
    """Per budget: the gain over random, and the best row (or the tied ones) by the pooled-std rule."""
    for budget in {r["budget"] for r in rows if not r["reference"]}:
        same = sorted((r for r in rows if r["budget"] == budget and not r["reference"]), key=lambda r: -r["mean_mean"])
        baseline = [r for r in same if r["condenser"] == BASELINE]
        for r in same:
            r["gain"] = r["mean_mean"] - baseline[0]["mean_mean"] if baseline else None
        if len(same) < 2:
            continue
        top = same[0]
        for r in same[1:]:
            if top["mean_mean"] - r["mean_mean"] <= pooled_std(top, r):
                top["rank_mark"] = r["rank_mark"] = "tied"
        top["rank_mark"] = top["rank_mark"] or "best"


def _spread(runs: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float], str]:
    """Mean and std of every metric over condensing seeds; one seed: its evaluation models' std."""
    if len(runs) == 1:
        return runs[0]["metrics"]["mean"], runs[0]["metrics"]["std"], "models"
    per_seed = [r["metrics"]["mean"] for r in runs]
    return ({k: statistics.fmean(m[k] for m in per_seed) for k in RECALL_KEYS},
            {k: statistics.stdev(m[k] for m in per_seed) for k in RECALL_KEYS}, "seeds")


def condense_cost(record: dict[str, Any]) -> float | None:
    """Seconds: the condenser's own time plus each shared stage it used, built now or earlier (None if unknown)."""
    cost = record["condensed"].get("cost")
    if cost is None:  # records before protocol v2: this run's condense stage only
        return None if record["stages"]["condense"].get("cached") else record["stages"]["condense"]["wall_s"]
    shared = [s.get("wall_s") for s in cost.get("shared", [])]
    return None if None in shared else cost["own_s"] + sum(shared)


def _row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One leaderboard row as plain values (what CSV and JSON hold, and markdown and HTML format).

    `runs` are the newest record of each condensing seed; the newest of them names the row. Its run ids are
    in the order of their seeds.
    """
    runs = sorted(runs, key=lambda run: run.get("spec", {}).get("seed", 0))
    r = max(runs, key=lambda r: (r["created"], r["run_id"]))
    mean, std, over = _spread(runs)
    reference = is_reference(r)
    cost = [condense_cost(run) for run in runs]
    return {
        "condenser": r["condenser"]["name"],
        "version": r["condenser"]["version"],
        "config": r["condenser"].get("config", {}),
        "config_hash": config_hash(r),
        "options": ablated(r),
        "trials": trials(r),
        "reference": reference,
        "budget": r["budget"],
        "learned_lrs": r["condensed"].get("learned_lrs") is not None,
        "soft_targets": r["condensed"].get("soft_targets") is not None,
        **{f"{k}_{stat}": values[k] for k in RECALL_KEYS for stat, values in (("mean", mean), ("std", std))},
        "std_over": over,
        "seeds": sorted(run.get("spec", {}).get("seed", 0) for run in runs),
        "evals": sorted({len(run["seeds"]) for run in runs}),
        "collapsed": collapsed(runs),
        "models": sum(len(run["metrics"].get("per_seed", [])) for run in runs),
        "recovery_pct": None,  # set by `tables`, which knows the reference row
        "gain": None,
        "rank_mark": None,
        "extra_bytes": r["condensed"]["extra_bytes"],
        # Nothing is condensed for the reference: its price is in training, as for every row.
        "condense_wall_s": None if reference or None in cost else statistics.fmean(cost),
        "condense_peak_mem_mb": None if reference else max(run["stages"]["condense"].get("peak_mem_mb", 0) for run in runs),
        "condense_device": r.get("device"),
        "run_ids": [run["run_id"] for run in runs],
    }


def collapsed(runs: list[dict[str, Any]]) -> int:
    """How many of the runs' evaluation models collapsed (see COLLAPSE_FRACTION)."""
    scores = [model["mean"] for run in runs for model in run["metrics"].get("per_seed", [])]
    if len(scores) < 2:
        return 0
    upper = statistics.quantiles(scores, n=4)[2]
    return sum(score < COLLAPSE_FRACTION * upper for score in scores)


def ablated(record: dict[str, Any]) -> dict[str, Any]:
    """The condenser options a run set beyond its tuned config: an ablation, which gets its own row name."""
    spec = record.get("spec", {})
    tuned = (spec.get("tuned") or {}).get("options", {})
    return {k: v for k, v in (spec.get("condenser_options") or {}).items() if k not in tuned or tuned[k] != v}


def trials(record: dict[str, Any]) -> str:
    """How the row's settings were chosen: the tuning ruleset's trial count (`*`: more trials than the ruleset
    gives, which makes the row incomparable), 0 for a condenser with no options, `hand` for settings chosen
    before the ruleset (protocol v2's hand-tuned defaults), `—` for the full-data reference."""
    tuned = record.get("spec", {}).get("tuned")
    if tuned:
        return f"{tuned['trials']}" + ("*" if tuned["trials"] > tuned["ruleset_trials"] else "")
    if is_reference(record):
        return "—"
    return "hand" if record["condenser"].get("config") else "0"


