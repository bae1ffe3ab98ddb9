"""RunSpec -> condense (validated, cached) -> train fresh models -> evaluate on the asked split -> one record."""
from __future__ import annotations

import dataclasses
import functools
import json
import platform
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from tqdm import tqdm

import vlbench
from vlbench import costs, validation
from vlbench.api import (
    Backbone, CondensedSet, CondenseContext, Condenser, ImageTextDataset, Pairs, RunSpec, TrainProtocol, VLBenchError, VLModel,
    cache_dir, stable_hash,
)
from vlbench.data.transforms import train_augment
from vlbench.provenance import package_versions, portable_path, source_commit, weight_hashes
from vlbench.metrics import summarize
from vlbench.pairs import load_pairs
from vlbench.plugins import Registry, registry
from vlbench.progress import RunProgress, expected_stages, history, same_shape
from vlbench.results import ResultsStore, RunRecord, new_run_id
from vlbench.stages import Stage, StageInput, reference_key
from vlbench.artifacts import cached
from vlbench.storage import atomic_write_json, save_tensors
from vlbench.train import TrainData, evaluate, train


class PluginError(VLBenchError):
    """A plugin failed or broke the contract; one line names it, `--traceback` shows the cause."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VLBenchError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


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


def _load_state(model: VLModel, path: Path) -> VLModel:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=False)
    return model


class Run:
    """The state of one run while it executes: resolved plugins, data, backbone, device."""

    def __init__(self, spec: RunSpec, plugins: Registry | None = None, progress: bool = True):
        self.spec, self.progress = spec, progress
        self.plugins = plugins or registry()
        self.condenser_cls: type[Condenser] = self.plugins.get("condenser", spec.condenser)
        self.condenser = self.condenser_cls(**spec.condenser_options)
        try:  # before any work: an extra that evaluation cannot use would be silently ignored
            validation.check_declared(self.condenser_cls.extras)
        except validation.InvalidSet as e:
            raise PluginError(f"condenser {spec.condenser!r} ({self._distribution()}) {e}") from e
        self.shared: dict[str, Stage] = self._shared_stages()
        self.backbone: Backbone = self.plugins.get("backbone", spec.backbone)(**spec.backbone_options)
        self.eval_backbone: Backbone = self._eval_backbone()
        self.source = self.plugins.get("dataset", spec.dataset)(**spec.dataset_options)
        self.augment = train_augment(self.source.flip_safe) if spec.protocol.augment else None
        self.stages: dict[str, dict[str, Any]] = {}
        self.commit = source_commit()  # now, before any work: the code this run starts with

    @functools.cached_property
    def device(self) -> torch.device:
        # Resolved on first use: a sweep plans CUDA runs on a submit host that has no GPU.
        return resolve_device(self.spec.device)

    def log(self, message: str) -> None:
        if self.progress:
            tqdm.write(message, file=sys.stderr)  # above the progress lines, not through them

    def load_dataset(self) -> ImageTextDataset:
        root = Path(self.spec.data_root).expanduser() if self.spec.data_root else None
        if root is not None and not root.exists():
            raise VLBenchError(f"data root {root} does not exist; pass the directory that holds the {self.spec.dataset} files")
        return self.source.load(root)

    def _eval_backbone(self) -> Backbone:
        """What evaluation models are built from: the condensing backbone, or the spec's eval_backbone."""
        spec = self.spec
        if spec.eval_backbone is None:
            return self.backbone
        if self.condenser_cls.trains_on_full_data:
            raise VLBenchError(f"{spec.condenser!r} condenses nothing (it trains on every training pair): "
                               f"run it with --backbone {spec.eval_backbone} instead of --eval-backbone")
        other = self.plugins.get("backbone", spec.eval_backbone)(**spec.eval_backbone_options)
        if other.text_encoder.id != self.backbone.text_encoder.id:  # the set's text features are that encoder's
            raise VLBenchError(f"evaluation backbone {other.id} encodes captions with {other.text_encoder.id}, but "
                               f"{self.backbone.id} condenses with {self.backbone.text_encoder.id}: a condensed set "
                               "can only be evaluated by a backbone with the same text encoder")
        return other

    def load_pairs(self, dataset: ImageTextDataset) -> tuple[Pairs, Pairs]:
        """Train pairs and the pairs of the evaluation split (as the evaluation backbone takes them); prepares
        the backbones and caches text features."""
        for backbone in dict.fromkeys([self.backbone, self.eval_backbone]):
            backbone.prepare(progress=self.progress)
        return (load_pairs(dataset, "train", self.backbone, self.progress),
                load_pairs(dataset, self.spec.split, self.eval_backbone, self.progress))

    def check_budget(self, dataset: ImageTextDataset) -> None:
        train_size = dataset.split("train").num_pairs
        if not self.condenser_cls.trains_on_full_data and not 0 < self.spec.budget <= train_size:
            raise VLBenchError(f"budget must be between 1 and the {train_size} training pairs of {dataset.name}, got {self.spec.budget}")

    def load_data(self) -> tuple[ImageTextDataset, Pairs, Pairs]:
        dataset = self.load_dataset()
        self.check_budget(dataset)
        return dataset, *self.load_pairs(dataset)

    def recorded_budget(self, dataset: ImageTextDataset) -> int:
        """The budget the record stores: `full` trains on every training pair, so its budget is their number."""
        return dataset.split("train").num_pairs if self.condenser_cls.trains_on_full_data else self.spec.budget

    def run_key(self, dataset: ImageTextDataset) -> str:
        """The run's identity in the results store (a sweep skips a run whose key has a record).

        The condenser's effective config is part of it (two configs of a method are two runs); where
        the data lives is not (the data set's fingerprint is).
        """
        return stable_hash({**self.spec.to_dict(), "data_root": None, "budget": self.recorded_budget(dataset),
                            "condenser_config": self.condenser.config_dict()})

    # Shared stages: cached work that many runs reuse (vlbench/stages.py); a condenser names the ones it
    # uses in `Condenser.requires`, plugins register them, and a sweep builds each distinct one once.

    def _shared_stages(self) -> dict[str, Stage]:
        stages = {}
        for name in sorted(self.condenser_cls.requires):
            try:
                stages[name] = self.plugins.get("stage", name)()
            except VLBenchError as e:  # before any work: one line naming the plugin and the stage
                raise PluginError(f"condenser {self.spec.condenser!r} ({self._distribution()}) requires shared stage "
                                  f"{name!r}, which cannot be used: {e}") from e
        return stages

    def stage_keys(self, dataset: ImageTextDataset) -> dict[str, str]:
        """{stage: cache key} of the stages this run's condenser requires; equal keys are one build."""
        where = StageInput(dataset, self.backbone, self.spec.seed, self.spec.protocol)
        return {name: stage.key(self.condenser, where) for name, stage in self.shared.items()}

    def context(self, dataset: ImageTextDataset, train_pairs: Pairs) -> CondenseContext:
        """What the condenser (and the stages it requires) gets."""
        return CondenseContext(
            dataset=dataset, train=train_pairs, backbone=self.backbone, budget=self.spec.budget, seed=self.spec.seed,
            device=self.device, protocol=self.spec.protocol, work_dir=cache_dir() / "work" / self.condense_key(dataset),
            progress=self.progress, reference_model=lambda seed: self.reference_model(dataset, train_pairs, seed),
        )

    def stage_context(self) -> CondenseContext:
        """Load the data (backbone weights, text features: cached) and return the context stages build in."""
        dataset = self.load_dataset()
        return self.context(dataset, self.load_pairs(dataset)[0])

    def prepare(self, stages: Iterable[str] = ()) -> None:
        """Compute into the cache what runs share: backbone weights, text features, and `stages`."""
        ctx = self.stage_context()
        with costs.collecting(self.run_key(ctx.dataset)):  # a stamp names the run it was prepared for
            for name in stages:
                self.shared[name].build(self.condenser, ctx)

    def reference_model(self, dataset: ImageTextDataset, train_pairs: Pairs, seed: int) -> VLModel:
        """A model trained on all training pairs with the shared trainer; cached per seed."""
        key = reference_key(StageInput(dataset, self.backbone, seed, self.spec.protocol), seed)

        def train_one() -> VLModel:
            self.log(f"training a full-data reference model (seed {seed}; cached in {cache_dir() / 'reference'})")
            model = self.backbone.build(seed, self.device)
            self._train(model, TrainData.from_pairs(train_pairs), seed, None, f"reference model seed {seed}")
            return model

        return cached("reference", f"{dataset.name}-{key}.safetensors", train_one,
                      lambda path: _load_state(self.backbone.build(seed, self.device), path),
                      lambda model, path: save_tensors(model.trainable_parameters(), path), stage="reference_model")

    def condense_key(self, dataset: ImageTextDataset) -> str:
        version = self.plugins.provenance("condenser", self.spec.condenser)["version"]
        return stable_hash({
            "condenser": self.spec.condenser, "version": version, "config": self.condenser.config_dict(),
            "dataset": dataset.fingerprint, "backbone": self.backbone.id, "budget": self.spec.budget,
            "seed": self.spec.seed, "protocol": self.spec.protocol.id,
        })

    def condense(self, dataset: ImageTextDataset, train_pairs: Pairs) -> tuple[CondensedSet, str, Path, bool]:
        key = self.condense_key(dataset)
        path = cache_dir() / "condensed" / f"{self.spec.condenser}-{self.spec.budget}-{key}"
        if (path / "manifest.json").exists():
            self.log(f"reusing condensed set {path}")
            # a set cached before canonical pixels is in the condensing backbone's space: migrated here, once
            return CondensedSet.load(path).to_canonical(self.backbone.normalization), key, path, True
        ctx = self.context(dataset, train_pairs)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        attempts = ctx.work_dir / "attempts.json"  # seconds spent by earlier, interrupted attempts
        earlier = json.loads(attempts.read_text()) if attempts.exists() else []
        start = time.perf_counter()
        try:
            with costs.collecting(self.run_key(dataset)) as shared:
                condensed = self._call_condenser(ctx)
        except KeyboardInterrupt:
            atomic_write_json(attempts, [*earlier, round(time.perf_counter() - start, 3)])
            raise
        self.validate(condensed, dataset)
        own = round(time.perf_counter() - start + sum(earlier), 3)
        condensed.meta.update(condenser=self.spec.condenser, config=self.condenser.config_dict(), key=key,
                              cost={"own_s": own, "attempts": len(earlier) + 1, "shared": shared})
        condensed = condensed.to_canonical(self.backbone.normalization)  # stored backbone-independent (vlbench.pixels)
        condensed.save(path)
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # resume state is scratch once the set is saved
        return condensed, key, path, False

    def _call_condenser(self, ctx: CondenseContext) -> CondensedSet:
        """condense(); a failure is one line naming the plugin, and leaves no resume state behind."""
        try:
            return self.condenser.condense(ctx)
        except KeyboardInterrupt:
            raise  # an interrupted condense resumes from its work dir
        except VLBenchError:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
            raise
        except Exception as e:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
            raise PluginError(f"condenser {self.spec.condenser!r} ({self._distribution()}) failed: "
                              f"{type(e).__name__}: {e} (rerun with --traceback for the trace)") from e

    def _distribution(self) -> str:
        origin = self.plugins.provenance("condenser", self.spec.condenser)
        return f"from {origin['distribution']} {origin['version']}"

    def validate(self, condensed: CondensedSet, dataset: ImageTextDataset) -> None:
        """Refuse a set that breaks the contract before anything caches or trains on it."""
        try:
            validation.check_condensed(
                condensed, budget=self.spec.budget, declared_extras=self.condenser_cls.extras,
                image_size=self.backbone.image_size, text_dim=self.backbone.text_encoder.dim,
                num_train=dataset.split("train").num_pairs,
                normalization=self.backbone.normalization if self.condenser.bounded_pixels() else None)
        except validation.InvalidSet as e:
            raise PluginError(f"condenser {self.spec.condenser!r} ({self._distribution()}) returned an invalid set: {e}; "
                              "nothing was cached") from e

    def _train(self, model: VLModel, data: TrainData, seed: int, lrs: dict[str, float] | None, label: str,
               protocol: TrainProtocol | None = None) -> None:
        protocol = protocol or self.spec.protocol
        with tqdm(total=protocol.steps, desc=label, disable=not self.progress, unit="step", leave=False) as bar:
            train(model, data, protocol, seed, learned_lrs=lrs, device=self.device, augment=self.augment,
                  progress=bar.update)

    def eval_seeds(self) -> list[int]:
        """Seeds of the evaluation models. Nothing is condensed for the full-data reference, so there the
        condensing seed picks other evaluation models instead (seeds 0..K-1 for seed 0, K..2K-1 for 1, ...)."""
        offset = self.spec.seed * self.spec.evals if self.condenser_cls.trains_on_full_data else 0
        return list(range(offset, offset + self.spec.evals))

    def execute(self, expected: dict[str, float] | None = None) -> dict[str, Any]:
        """Run every stage under one progress line (`expected`: seconds per stage, for its ETA) and return the record."""
        # On a terminal only: in a log file a line redrawn twice a second is thousands of lines.
        self.view = RunProgress(f"{self.spec.condenser}@{self.spec.budget}", self.spec.evals, expected,
                                enabled=self.progress and sys.stderr.isatty())
        try:
            return self._execute()
        finally:
            self.view.close()

    @contextmanager
    def _stage(self, name: str) -> Iterator[dict[str, Any]]:
        self.view.stage(name)
        with stage(self.stages, name, self.device) as info:
            yield info

    def _execute(self) -> dict[str, Any]:
        with self._stage("prepare"):
            dataset, train_pairs, eval_pairs = self.load_data()
        with self._stage("condense") as info:
            if self.condenser_cls.trains_on_full_data:
                data, lrs = TrainData.from_pairs(train_pairs), None
                n_bytes = train_pairs.images.nbytes + train_pairs.text_features.nbytes
                condensed_info = {"key": None, "path": None, "num_pairs": len(train_pairs), "storage_bytes": n_bytes,
                                  "extra_bytes": 0, "learned_lrs": None, "soft_targets": None,
                                  "cost": {"own_s": 0.0, "shared": []}}
                info["cached"] = False
            else:
                condensed, key, path, info["cached"] = self.condense(dataset, train_pairs)
                pixels = condensed.pixels_for(self.eval_backbone)  # as the evaluation backbone takes them
                data = TrainData.from_condensed(pixels, condensed.text_features, condensed.dense_targets())
                lrs = condensed.learned_lrs
                cost = condensed.meta.get("cost") or {}
                info["resumed"] = not info["cached"] and cost.get("attempts", 1) > 1
                condensed_info = {"key": key, "path": portable_path(path), "num_pairs": len(condensed),
                                  "storage_bytes": condensed.storage_bytes, "extra_bytes": condensed.extra_bytes,
                                  "learned_lrs": lrs, "soft_targets": condensed.describe_targets(),  # trained with them
                                  "cost": condensed.meta.get("cost")}
        protocol = self.condenser.evaluation_protocol(len(data), self.spec.protocol)
        seeds, per_seed = self.eval_seeds(), []
        with self._stage("evaluate"):
            for k, seed in enumerate(seeds):
                self.view.eval_model(k, protocol.steps)
                model = self.eval_backbone.build(seed, self.device)
                self._train(model, data, seed, lrs, f"eval model {k + 1}/{len(seeds)}", protocol)
                per_seed.append(evaluate(model, eval_pairs, self.device))
                self.log(f"eval model {k + 1}/{len(seeds)}: mean recall on {self.spec.split} {per_seed[-1]['mean']:.1f}")
        return self.record(dataset, condensed_info, seeds, per_seed, protocol)

    def record(self, dataset: ImageTextDataset, condensed: dict, seeds: list[int], per_seed: list[dict],
               protocol: TrainProtocol) -> dict[str, Any]:
        spec = self.spec
        run_key = self.run_key(dataset)
        spec_dict = {**spec.to_dict(), "data_root": None, "budget": self.recorded_budget(dataset)}
        return {
            "schema": 2,
            "run_id": new_run_id(run_key),
            "run_key": run_key,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # sub-second: newest wins
            "spec": spec_dict,
            "split": spec.split,
            "condenser": {**self.plugins.provenance("condenser", spec.condenser), "config": self.condenser.config_dict(),
                          "config_hash": stable_hash(self.condenser.config_dict(), 6),
                          "reference": self.condenser_cls.trains_on_full_data},
            "backbone": self._backbone_block(spec.backbone, self.backbone),
            # only when another backbone evaluated: records from before keep their shape
            **({"eval_backbone": self._backbone_block(spec.eval_backbone, self.eval_backbone)} if spec.eval_backbone else {}),
            "dataset": {**self.plugins.provenance("dataset", spec.dataset), "fingerprint": dataset.fingerprint},
            # the table's protocol; `evaluation`: how these models trained, where the condenser differs (full)
            "protocol": {"id": spec.protocol.id, **spec_dict["protocol"],
                         "evaluation": None if protocol == spec.protocol else dataclasses.asdict(protocol)},
            "budget": self.recorded_budget(dataset),
            "condensed": condensed,
            "seeds": seeds,
            "metrics": {"per_seed": per_seed, **summarize(per_seed)},
            "stages": self.stages,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(),
            "packages": package_versions(),
            "python": platform.python_version(),
            "vlbench_version": vlbench.__version__,
            "source": self.commit,
        }

    def _backbone_block(self, name: str, backbone: Backbone) -> dict[str, Any]:
        return {**self.plugins.provenance("backbone", name), "id": backbone.id, "config": backbone.config,
                "weights_sha256": weight_hashes(backbone.weight_files())}


def recorded(spec: RunSpec, results_dir: Path | str, plugins: Registry | None = None) -> RunRecord | None:
    """The newest record of this very run in `results_dir`, if it ran before."""
    run_ = Run(spec, plugins, progress=False)
    found = ResultsStore(Path(results_dir)).find(run_.run_key(run_.load_dataset()))
    return found[-1] if found else None


def run(spec: RunSpec, results_dir: Path | str, progress: bool = True, plugins: Registry | None = None,
        history_dirs: Iterable[Path | str] = ()) -> RunRecord:
    """Execute a run and append its record to the results store; returns the record. Earlier records
    in `results_dir` and `history_dirs` of the same run shape give the progress line its expected times."""
    expected = expected_stages(same_shape(history([results_dir, *history_dirs]), spec)) if progress else None
    record = RunRecord(Run(spec, plugins, progress).execute(expected))
    ResultsStore(Path(results_dir)).add(record)
    return record
