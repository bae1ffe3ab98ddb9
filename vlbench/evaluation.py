"""A resolved run executed: prepare the data, condense (cached), train `evals` fresh models on the set,
score them on the asked split, and return the record, with each stage's wall time and peak memory.
"""
from __future__ import annotations

import logging
import platform
import resource
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

import torch

import vlbench
from vlbench.api import Backbone, CondensedSet, Pairs, TrainProtocol, stable_hash
from vlbench.condensing import condensed_set
from vlbench.data.bank import stored_pixels
from vlbench.metrics import summarize
from vlbench.parallel import NUMERIC_THREADS, Pool, pool_workers
from vlbench.progress import bar, reporter
from vlbench.provenance import cpu, loaded_code, package_versions, portable_path, source_commit, tensors_sha256, weight_hashes
from vlbench.board.records import new_run_id
from vlbench.train import TrainData, evaluate

if TYPE_CHECKING:
    from vlbench.runner import Run

log = logging.getLogger(__name__)


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is the process peak so far (KiB on Linux): a stage reports the peak up to its end.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished worker processes (pools are joined within a stage)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


@contextmanager
def stage(stages: dict[str, dict[str, Any]], name: str, device: torch.device) -> Iterator[dict[str, Any]]:
    """Time a stage (wall and CPU: on a shared machine CPU time says more about the work) and record its
    peak memory (GPU memory on CUDA, process RSS on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    info: dict[str, Any] = {}
    start, cpu = time.perf_counter(), _cpu_s()
    yield info
    info.update(wall_s=round(time.perf_counter() - start, 3), cpu_s=round(_cpu_s() - cpu, 3),
                peak_mem_mb=round(_peak_mem_mb(device), 1))
    stages[name] = info


class Evaluation:
    """One execution of a resolved run: its stages' times and the record they end in."""

    def __init__(self, run: Run):
        self.run = run
        self.stages: dict[str, dict[str, Any]] = {}
        self.artifacts: dict[str, str | None] = {}  # content hashes of what the run consumed and made, by stage
        self.workers = 1  # processes that train the evaluation models (`_evaluate` decides)
        self.commit = source_commit()  # now, before any work: the code this run starts with

    def execute(self, expected: dict[str, float] | None = None) -> dict[str, Any]:
        """Run every stage under one progress line (`expected`: seconds per stage, for its ETA) and return the record."""
        spec = self.run.spec
        with reporter().running(f"{spec.condenser}@{spec.budget}", spec.evals, expected):
            return self._execute()

    @contextmanager
    def _stage(self, name: str) -> Iterator[dict[str, Any]]:
        reporter().stage(name)
        with stage(self.stages, name, self.run.device) as info:
            yield info

    def _execute(self) -> dict[str, Any]:
        run = self.run
        with self._stage("prepare"):
            _, train_pairs, eval_pairs = run.load_data()
        self._hash_inputs(train_pairs, eval_pairs)
        with self._stage("condense") as info:
            data, lrs, condensed_info = self._condense(train_pairs, info)
        protocol = run.condenser.evaluation_protocol(len(data), run.spec.protocol)
        seeds = run.eval_seeds()
        with self._stage("evaluate"):
            per_seed = self._evaluate(seeds, data, lrs, protocol, eval_pairs)
        return self.record(condensed_info, seeds, per_seed, protocol)

    def _hash_inputs(self, train_pairs: Pairs, eval_pairs: Pairs) -> None:
        split = self.run.spec.split
        self.artifacts.update(data=self.run.dataset.fingerprint,
                              images=tensors_sha256({"train": stored_pixels(train_pairs.images),
                                                     split: stored_pixels(eval_pairs.images)}),
                              text_features=tensors_sha256({"train": train_pairs.text_features,
                                                            split: eval_pairs.text_features}))

    def _evaluate(self, seeds: list[int], data: TrainData, lrs: dict | None, protocol: TrainProtocol,
                  eval_pairs: Pairs) -> list[dict[str, float]]:
        """Train and score one fresh model per seed: independent, so on a pool of single-threaded workers
        (vlbench/parallel.py), each model's numbers the same whatever the pool."""
        run, per_seed = self.run, [{} for _ in seeds]
        self.workers = pool_workers(len(seeds), run.device.type)
        # In this process the run itself (and its progress bars); a worker gets it resolved again from its
        # spec, without progress bars (`Run.__reduce__`).
        pool = Pool(self.workers, _share_evaluation, (run, data, eval_pairs))
        tasks = [(seed, lrs, f"eval model {k + 1}/{len(seeds)}", protocol) for k, seed in enumerate(seeds)]
        steps = protocol.steps if self.workers == 1 else 0
        reporter().eval_model(0, steps)
        # One worker: each model's steps are the live bar (here). More: workers' steps are not seen, models are.
        with bar(len(seeds), f"eval models ({self.workers} workers)", "model") if self.workers > 1 else nullcontext() \
                as models:
            for done, (k, metrics) in enumerate(pool.map(_train_and_score, tasks), 1):
                per_seed[k] = metrics
                if models is not None:
                    models.update()
                reporter().eval_model(done, steps)
                log.info(f"eval model {k + 1}/{len(seeds)}: mean recall on {run.spec.split} {metrics['mean']:.1f}")
        return per_seed

    def _condense(self, train_pairs: Pairs, info: dict[str, Any]) -> tuple[TrainData, dict | None, dict[str, Any]]:
        """What evaluation models train on, with its learned lrs, and the record's `condensed` block."""
        run = self.run
        if run.reference:
            info["cached"] = False
            n_bytes = train_pairs.images.nbytes + train_pairs.text_features.nbytes
            return TrainData.from_pairs(train_pairs), None, {
                "key": None, "path": None, "num_pairs": len(train_pairs), "storage_bytes": n_bytes, "extra_bytes": 0,
                "learned_lrs": None, "soft_targets": None, "cost": {"own_s": 0.0, "shared": []}}
        condensed, path, info["cached"] = condensed_set(run, train_pairs)
        # what the set was made from (its shared stages, hashed when it was condensed), then the set itself
        self.artifacts.update({used["stage"]: used.get("sha256") for used in condensed.meta.get("cost", {}).get("shared", [])})
        self.artifacts["condensed"] = tensors_sha256(condensed.tensors())
        data = training_data(run, condensed)
        cost = condensed.meta.get("cost") or {}
        info["resumed"] = not info["cached"] and cost.get("attempts", 1) > 1
        return data, condensed.learned_lrs, {
            "key": run.condense_key, "path": portable_path(path), "num_pairs": len(condensed),
            "storage_bytes": condensed.storage_bytes, "extra_bytes": condensed.extra_bytes,
            "learned_lrs": condensed.learned_lrs, "soft_targets": condensed.describe_targets(),  # trained with them
            "cost": condensed.meta.get("cost")}

    def record(self, condensed: dict, seeds: list[int], per_seed: list[dict], protocol: TrainProtocol) -> dict[str, Any]:
        run, spec = self.run, self.run.spec
        spec_dict = {**spec.to_dict(), "data_root": None}
        config = run.condenser.config_dict()
        return {
            "schema": 2,
            "run_id": new_run_id(run.run_key),
            "run_key": run.run_key,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # sub-second: newest wins
            "spec": spec_dict,
            "split": spec.split,
            "condenser": {**run.plugins.provenance("condenser", spec.condenser), "config": config,
                          "config_hash": stable_hash(config, 6), "reference": run.reference},
            "backbone": self._backbone_block(spec.backbone, run.backbone),
            # only when another backbone evaluated: records from before keep their shape
            **({"eval_backbone": self._backbone_block(spec.eval_backbone, run.eval_backbone)} if spec.eval_backbone else {}),
            "dataset": {**run.plugins.provenance("dataset", spec.dataset), "fingerprint": run.dataset.fingerprint},
            # the table's protocol; `evaluation`: how these models trained, where the condenser differs (full)
            "protocol": {"id": spec.protocol.id, **spec_dict["protocol"],
                         "evaluation": None if protocol == spec.protocol else protocol.to_dict()},
            "budget": spec.budget,
            "condensed": condensed,
            "seeds": seeds,
            "metrics": {"per_seed": per_seed, **summarize(per_seed)},
            "stages": self.stages,
            "artifacts": self.artifacts,
            "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "cpu",
            "cpu": cpu(),
            "torch_threads": NUMERIC_THREADS,  # every number of the run (vlbench/parallel.py)
            "workers": self.workers,  # processes that trained the evaluation models (1: this one)
            "packages": package_versions(),
            "python": platform.python_version(),
            "vlbench_version": vlbench.__version__,
            "source": {**self.commit, "code": loaded_code(self.commit["commit"])},  # the code that ran, beside its commit
        }

    def _backbone_block(self, name: str, backbone: Backbone) -> dict[str, Any]:
        return {**self.run.plugins.provenance("backbone", name), "id": backbone.id, "config": backbone.non_default_options,
                "weights_sha256": weight_hashes(backbone.weight_files())}


# What every evaluation model of a run trains on and is scored on: sent once to each worker, not once per model.
_evaluation: dict[str, Any] = {}


def training_data(run: Run, condensed: CondensedSet) -> TrainData:
    """What a run's evaluation models train on: the set's pixels as the evaluation backbone takes them, its text
    and its targets."""
    pixels = condensed.pixels_for(run.eval_backbone)
    return TrainData.from_condensed(pixels, condensed.text_features, condensed.dense_targets(), condensed.target_loss)


def _share_evaluation(run: Run, data: TrainData, eval_pairs: Pairs) -> None:
    _evaluation.update(run=run, data=data, eval_pairs=eval_pairs)


def _train_and_score(task: tuple[int, dict | None, str, TrainProtocol]) -> dict[str, float]:
    seed, lrs, label, protocol = task
    run = _evaluation["run"]
    model = run.eval_backbone.build(seed, run.device)
    run.fit(model, _evaluation["data"], seed, lrs, label, protocol)
    return evaluate(model, _evaluation["eval_pairs"], run.device)
