"""A run, resolved: its spec against the plugins (condenser, backbones, data source, shared stages), its
device and the keys it is known by. What it condenses is cached by vlbench/condensing.py; its evaluation
and record are vlbench/evaluation.py's. `run()` and `recorded()` are the entry points.
"""
from __future__ import annotations

import dataclasses
import functools
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable

import torch

from vlbench import validation
from vlbench.api import Backbone, Condenser, ImageTextDataset, Pairs, RunSpec, TrainProtocol, VLBenchError, VLModel, stable_hash
from vlbench.config import spec_from_config
from vlbench.core import PluginError, check_budget
from vlbench.data.transforms import train_augment
from vlbench.data.pairs import load_pairs
from vlbench.plugins import Registry, registry
from vlbench.board.records import ResultsStore, RunRecord, run_identity, run_shape
from vlbench.progress import bar, expected_stages, history, quiet, same_run
from vlbench.stages import Stage, StageInput
from vlbench.train import TrainData, train


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VLBenchError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


class Run:
    """A RunSpec resolved against the plugins, checked before any work, and not changed afterwards.

    `spec` is the resolved spec: backbone options as the backbone's effective config (an option spelled
    out at its default is the default run: same keys, same record) and, for the full-data reference,
    the budget settled to the number of training pairs. The data set's annotations are read once, on
    first use (`dataset`; the reference reads them at once, for its budget).
    """

    def __init__(self, spec: RunSpec, plugins: Registry | None = None, dataset: ImageTextDataset | None = None):
        self.plugins = plugins or registry()
        self.condenser_cls: type[Condenser] = self.plugins.get("condenser", spec.condenser)
        self.condenser = self.condenser_cls(**spec.condenser_options)
        self.spec = spec  # as given until the backbones are built: the errors below name it
        try:  # before any work: an extra that evaluation cannot use would be silently ignored
            validation.check_declared(self.condenser_cls.extras)
        except validation.InvalidSet as e:
            raise PluginError(f"condenser {spec.condenser!r} ({self.distribution}) {e}") from e
        if not self.reference and spec.budget < 1:
            raise VLBenchError(f"budget must be a positive number of pairs, got {spec.budget}")
        self.shared: dict[str, Stage] = self._shared_stages()
        self.backbone: Backbone = self.plugins.get("backbone", spec.backbone)(**spec.backbone_options)
        self.eval_backbone: Backbone = self._eval_backbone()
        self.source = self.plugins.get("dataset", spec.dataset)(**spec.dataset_options)
        self.augment = train_augment(self.source.flip_safe) if spec.protocol.augment else None
        if dataset is not None:
            self.dataset = dataset  # read once by the caller for many runs (a sweep's plan)
        self.spec = self._resolved(spec)
        if self.spec.eval_backbone is None:  # its effective options are the condensing backbone's: the plain run
            self.eval_backbone = self.backbone

    def __reduce__(self):
        """Sent to a worker process as its resolved spec, resolved there again against that process's plugins
        (it shows no progress: a spawned process's reporter logs to a `logging` nobody configured)."""
        return Run, (self.spec,)

    def _resolved(self, spec: RunSpec) -> RunSpec:
        effective = {"backbone_options": self.backbone.non_default_options}
        if spec.eval_backbone not in (None, spec.backbone):  # the own name with options means "these options"
            effective["eval_backbone_options"] = self.eval_backbone.non_default_options
        if self.reference:  # `full` trains on every training pair: that is its budget
            effective["budget"] = self.dataset.split("train").num_pairs
        return dataclasses.replace(spec, **effective)

    @property
    def reference(self) -> bool:
        """The full-data reference: nothing is condensed, evaluation trains on every training pair."""
        return self.condenser_cls.trains_on_full_data

    @functools.cached_property
    def device(self) -> torch.device:
        # Resolved on first use: a sweep plans CUDA runs on a submit host that has no GPU.
        return resolve_device(self.spec.device)

    @functools.cached_property
    def dataset(self) -> ImageTextDataset:
        """The data set's annotations and fingerprint (no pixels)."""
        root = Path(self.spec.data_root).expanduser() if self.spec.data_root else None
        if root is not None and not root.exists():
            raise VLBenchError(f"data root {root} does not exist; pass the directory that holds the {self.spec.dataset} files")
        return self.source.load(root)

    @property
    def distribution(self) -> str:
        origin = self.plugins.provenance("condenser", self.spec.condenser)
        return f"from {origin['distribution']} {origin['version']}"

    def _eval_backbone(self) -> Backbone:
        """What evaluation models are built from: the condensing backbone, or the spec's eval_backbone."""
        spec = self.spec
        if spec.eval_backbone is None:
            return self.backbone
        if self.reference:
            raise VLBenchError(f"{spec.condenser!r} condenses nothing (it trains on every training pair): "
                               f"run it with --backbone {spec.eval_backbone} instead of --eval-backbone")
        other = self.plugins.get("backbone", spec.eval_backbone)(**spec.eval_backbone_options)
        if other.text_encoder.id != self.backbone.text_encoder.id:  # the set's text features are that encoder's
            raise VLBenchError(f"evaluation backbone {other.id} encodes captions with {other.text_encoder.id}, but "
                               f"{self.backbone.id} condenses with {self.backbone.text_encoder.id}: a condensed set "
                               "can only be evaluated by a backbone with the same text encoder")
        return other

    # Shared stages: cached work that many runs reuse (vlbench/stages.py); a condenser names the ones it
    # uses in `Condenser.requires`, plugins register them, and a sweep builds each distinct one once.

    def _shared_stages(self) -> dict[str, Stage]:
        stages = {}
        for name in sorted(self.condenser_cls.requires):
            try:
                stages[name] = self.plugins.get("stage", name)()
            except VLBenchError as e:  # before any work: one line naming the plugin and the stage
                raise PluginError(f"condenser {self.spec.condenser!r} ({self.distribution}) requires shared stage "
                                  f"{name!r}, which cannot be used: {e}") from e
        return stages

    # ----------------------------------------------------------------- keys

    @functools.cached_property
    def run_key(self) -> str:
        """The run's identity in the results store (a sweep skips a run whose key has a record).

        The condenser's effective config is part of it (two configs of a method are two runs); where
        the data lives is not (the data set's fingerprint is).
        """
        return stable_hash({**self.spec.to_dict(), "data_root": None, "condenser_config": self.condenser.config_dict()})

    @property
    def shape(self) -> tuple:
        """`board.records.run_shape`: which earlier records say how long this run takes (the progress line's prior)."""
        return run_shape(self.spec.condenser, self.condenser.config_dict(), self.spec.to_dict())

    @property
    def identity(self) -> str:
        """How the results store recognises this run (`results.run_identity`): its spec and the condenser's
        effective config, however its options were spelled; the run key itself wherever no option is set."""
        return run_identity(self.spec.to_dict(), self.condenser.config_dict())

    @functools.cached_property
    def condense_key(self) -> str:
        """The condensed set's identity in the cache: what determines it, and nothing that only evaluates it."""
        version = self.plugins.provenance("condenser", self.spec.condenser)["version"]
        code = self.condenser_cls.code_version  # at version 1 (or none) the key is the one sets had before versions
        # what the set was made from: the versions of its shared stages' builders (likewise absent at version 1)
        stages = {name: stage.code_version.key() for name, stage in sorted(self.shared.items())
                  if stage.code_version and stage.code_version.key()}
        return stable_hash({
            "condenser": self.spec.condenser, "version": version, "config": self.condenser.config_dict(),
            "dataset": self.dataset.fingerprint, "backbone": self.backbone.id, "budget": self.spec.budget,
            "seed": self.spec.seed, "protocol": self.spec.protocol.id, **({"code": code.key()} if code and code.key() else {}),
            **({"stages": stages} if stages else {}),
        })

    @property
    def stage_keys(self) -> dict[str, str]:
        """{stage: cache key} of the stages this run's condenser requires; equal keys are one build."""
        where = StageInput(self.dataset, self.backbone, self.spec.seed, self.spec.protocol)
        return {name: stage.key(self.condenser, where) for name, stage in self.shared.items()}

    def eval_seeds(self) -> list[int]:
        """Seeds of the evaluation models. Nothing is condensed for the full-data reference, so there the
        condensing seed picks other evaluation models instead (seeds 0..K-1 for seed 0, K..2K-1 for 1, ...)."""
        offset = self.spec.seed * self.spec.evals if self.reference else 0
        return list(range(offset, offset + self.spec.evals))

    # ----------------------------------------------------------------- data and training

    def check_budget(self) -> None:
        """Before any pixel is read (a sweep plans with it): the budget against the data set's training pairs."""
        check_budget(self.spec.budget, self.dataset.split("train").num_pairs, f"training pairs of {self.dataset.name}")

    def load_pairs(self) -> tuple[Pairs, Pairs]:
        """Train pairs and the pairs of the evaluation split (as the evaluation backbone takes them); prepares
        the backbones and caches text features. The data set is read first: missing data is named before
        any weights are fetched."""
        dataset = self.dataset
        for backbone in dict.fromkeys([self.backbone, self.eval_backbone]):
            backbone.prepare()
        return load_pairs(dataset, "train", self.backbone), load_pairs(dataset, self.spec.split, self.eval_backbone)

    def load_data(self) -> tuple[ImageTextDataset, Pairs, Pairs]:
        self.check_budget()
        return self.dataset, *self.load_pairs()

    def fit(self, model: VLModel, data: TrainData, seed: int, lrs: dict[str, float] | None, label: str,
            protocol: TrainProtocol | None = None) -> None:
        """Train `model` the run's way (its protocol, device and augmentation), with a progress bar."""
        protocol = protocol or self.spec.protocol
        with bar(protocol.steps, label, "step") as steps:
            train(model, data, protocol, seed, learned_lrs=lrs, device=self.device, augment=self.augment,
                  on_step=steps.update)


def run_from_config(path: str | None, defaults: dict[str, Any], flags: dict[str, Any],
                    condenser_options: dict[str, Any] | None = None) -> Run:
    """The run a plugin command's `--config` file describes, resolved (`vlbench.config.spec_from_config`)."""
    return Run(spec_from_config(path, defaults, flags, condenser_options))


def resolved(spec: RunSpec | Run, plugins: Registry | None = None) -> Run:
    return spec if isinstance(spec, Run) else Run(spec, plugins)


def recorded(spec: RunSpec | Run, results_dir: Path | str, plugins: Registry | None = None) -> RunRecord | None:
    """The newest record of this very run in `results_dir`, if it ran before."""
    found = ResultsStore(Path(results_dir)).find(resolved(spec, plugins).identity)
    return found[-1] if found else None


def run(spec: RunSpec | Run, results_dir: Path | str, progress: bool = True, plugins: Registry | None = None,
        history_dirs: Iterable[Path | str] = (), allow_dirty: bool = False) -> RunRecord:
    """Execute a run and append its record to the results store; returns the record. Earlier records
    in `results_dir` and `history_dirs` of the same run (`Run.shape`) give the progress line its expected
    times; `progress` False shows none. A directory git tracks takes only records of committed code
    (`allow_dirty`: any)."""
    from vlbench.evaluation import Evaluation
    from vlbench.provenance import check_recordable, current_source

    run_ = resolved(spec, plugins)
    check_recordable(results_dir, current_source(), allow_dirty)  # before any work
    with nullcontext() if progress else quiet():
        expected = expected_stages(same_run(history([results_dir, *history_dirs]), run_.shape))
        record = RunRecord(Evaluation(run_).execute(expected))
    check_recordable(results_dir, record["source"], allow_dirty)  # and again: the code may have changed meanwhile
    ResultsStore(Path(results_dir)).add(record)
    return record
