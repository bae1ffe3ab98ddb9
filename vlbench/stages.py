"""Shared stages: cached work that many runs reuse (a reference model, an expert buffer, a training history).

A condenser names the stages it uses in `Condenser.requires`; a plugin registers each stage by
name (hook `register_stages`). A stage answers two questions: what its cache key is, computed when
a sweep plans, from what is known before any pixel or text feature is loaded (`StageInput`); and how
to build it into the cache (`build`, given the run's CondenseContext). Runs whose keys are equal
share one build, which a sweep does once, in its prepare phase, before those runs.

Correctness never depends on that phase: a run whose stage was not prepared builds it when it
condenses, as `vlbench run` always does. So `build` must be idempotent and safe when processes race
(build under a lock beside the cache file, reuse what is there), and the condenser must find the
result where `build` put it. This module imports no torch: the registry checks stage classes with it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from vlbench.core import TrainProtocol, stable_hash
from vlbench.versions import CodeVersion

#: What trains the full-data reference model (bump when it changes; vlbench/versions.py). 2: at FULL_DATA_LR,
#: refused when it never rose above chance (version 1 trained at the protocol's lr and diverged for seeds 1 and 2).
REFERENCE_MODEL = CodeVersion("reference_model", 2, ("vlbench.stages", "vlbench.condensing", "vlbench.train"))

if TYPE_CHECKING:
    from vlbench.api import Backbone, CondenseContext, Condenser, ImageTextDataset


@dataclass(frozen=True)
class StageInput:
    """What a stage's key may depend on (besides the condenser's config); a CondenseContext has these fields too."""

    dataset: ImageTextDataset  # its annotations and fingerprint; no pixels
    backbone: Backbone
    seed: int
    protocol: TrainProtocol


class Stage(ABC):
    """Cached work shared by runs: registered by name, named by condensers in `requires`."""

    name: ClassVar[str]
    #: The version of the code that builds it. A set condensed from the stage's output is keyed by it too
    #: (Run.condense_key), so that bumping it rebuilds those sets instead of reusing ones made from the old build.
    code_version: ClassVar[CodeVersion | None] = None

    @abstractmethod
    def key(self, condenser: Condenser, run: StageInput | CondenseContext) -> str:
        """The identity of what `build` makes for this condenser (and its config) in this run."""

    @abstractmethod
    def build(self, condenser: Condenser, ctx: CondenseContext) -> Any:
        """Build into the cache, or find it there (idempotent; concurrent callers wait for one build)."""


def reference_key(run: StageInput | CondenseContext, seed: int) -> str:
    return stable_hash([run.dataset.fingerprint, run.backbone.id, run.protocol.id, seed, *REFERENCE_MODEL.key()])


class ReferenceModel(Stage):
    """The full-data model coresets select with: `ctx.reference_model(seed)`, trained by the runner and cached."""

    name = "reference_model"
    code_version = REFERENCE_MODEL

    def key(self, condenser: Condenser, run: StageInput | CondenseContext) -> str:
        return reference_key(run, run.seed)

    def build(self, condenser: Condenser, ctx: CondenseContext) -> Any:
        return ctx.reference_model(ctx.seed)
