"""A resolved run executed: prepare the data, condense (cached), train `evals` fresh models on the set,
score them on the asked split, and return the record, with each stage's wall time and peak memory.
"""
from __future__ import annotations

import platform
import resource
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

import torch

import vlbench
from vlbench.api import Backbone, Pairs, TrainProtocol, stable_hash
from vlbench.condensing import condensed_set
from vlbench.data.bank import stored_pixels
from vlbench.metrics import summarize
from vlbench.progress import RunProgress
from vlbench.provenance import cpu, loaded_code, package_versions, portable_path, source_commit, tensors_sha256, weight_hashes
from vlbench.results import new_run_id
from vlbench.train import TrainData, evaluate

if TYPE_CHECKING:
    from vlbench.runner import Run


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is the process peak so far (KiB on Linux): a stage reports the peak up to its end.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def stage(stages: dict[str, dict[str, Any]], name: str, device: torch.device) -> Iterator[dict[str, Any]]:
    """Time a stage and record its peak memory (GPU memory on CUDA, process RSS on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    info: dict[str, Any] = {}
    start = time.perf_counter()
    yield info
    info.update(wall_s=round(time.perf_counter() - start, 3), peak_mem_mb=round(_peak_mem_mb(device), 1))
    stages[name] = info


class Evaluation:
    """One execution of a resolved run: its stages' times and the record they end in."""

    def __init__(self, run: Run):
        self.run = run
        self.stages: dict[str, dict[str, Any]] = {}
        self.artifacts: dict[str, str | None] = {}  # content hashes of what the run consumed and made, by stage
        self.commit = source_commit()  # now, before any work: the code this run starts with

    def execute(self, expected: dict[str, float] | None = None) -> dict[str, Any]:
        """Run every stage under one progress line (`expected`: seconds per stage, for its ETA) and return the record."""
        spec = self.run.spec
        # On a terminal only: in a log file a line redrawn twice a second is thousands of lines.
        self.view = RunProgress(f"{spec.condenser}@{spec.budget}", spec.evals, expected,
                                enabled=self.run.progress and sys.stderr.isatty())
        try:
            return self._execute()
        finally:
            self.view.close()

    @contextmanager
    def _stage(self, name: str) -> Iterator[dict[str, Any]]:
        self.view.stage(name)
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
        seeds, per_seed = run.eval_seeds(), []
        with self._stage("evaluate"):
            for k, seed in enumerate(seeds):
                self.view.eval_model(k, protocol.steps)
                model = run.eval_backbone.build(seed, run.device)
                run.fit(model, data, seed, lrs, f"eval model {k + 1}/{len(seeds)}", protocol)
                per_seed.append(evaluate(model, eval_pairs, run.device))
                run.log(f"eval model {k + 1}/{len(seeds)}: mean recall on {run.spec.split} {per_seed[-1]['mean']:.1f}")
        return self.record(condensed_info, seeds, per_seed, protocol)

    def _hash_inputs(self, train_pairs: Pairs, eval_pairs: Pairs) -> None:
        split = self.run.spec.split
        self.artifacts.update(data=self.run.dataset.fingerprint,
                              images=tensors_sha256({"train": stored_pixels(train_pairs.images),
                                                     split: stored_pixels(eval_pairs.images)}),
                              text_features=tensors_sha256({"train": train_pairs.text_features,
                                                            split: eval_pairs.text_features}))

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
        pixels = condensed.pixels_for(run.eval_backbone)  # as the evaluation backbone takes them
        data = TrainData.from_condensed(pixels, condensed.text_features, condensed.dense_targets(), condensed.target_loss)
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
            "torch_threads": torch.get_num_threads(),
            "packages": package_versions(),
            "python": platform.python_version(),
            "vlbench_version": vlbench.__version__,
            "source": {**self.commit, "code": loaded_code(self.commit["commit"])},  # the code that ran, beside its commit
        }

    def _backbone_block(self, name: str, backbone: Backbone) -> dict[str, Any]:
        return {**self.run.plugins.provenance("backbone", name), "id": backbone.id, "config": backbone.config,
                "weights_sha256": weight_hashes(backbone.weight_files())}
