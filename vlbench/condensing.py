"""A run's artifacts: the condensed set (validated, then cached under the run's condense key) and the
shared stages its condenser requires (the full-data reference model among them).

A condensed set is a directory (safetensors + JSON), built by the condenser in a work directory that
an interrupted attempt resumes from; everything else goes through `vlbench.artifacts.cached`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from vlbench import costs, validation
from vlbench.api import CondensedSet, CondenseContext, Pairs, PluginError, VLBenchError, VLModel, cache_dir
from vlbench.artifacts import cached
from vlbench.core import FULL_DATA_LR
from vlbench.coreset import warn_if_unlearned
from vlbench.parallel import one_thread
from vlbench.stages import StageInput, reference_key
from vlbench.storage import atomic_write_json, file_lock, save_tensors
from vlbench.train import TrainData

if TYPE_CHECKING:
    from vlbench.runner import Run


log = logging.getLogger(__name__)


def context(run: Run, train_pairs: Pairs) -> CondenseContext:
    """What the condenser (and the stages it requires) gets."""
    spec = run.spec
    return CondenseContext(
        dataset=run.dataset, train=train_pairs, backbone=run.backbone, budget=spec.budget, seed=spec.seed,
        device=run.device, protocol=spec.protocol, work_dir=cache_dir() / "work" / run.condense_key,
        reference_model=lambda seed: reference_model(run, train_pairs, seed), flip_safe=run.source.flip_safe,
    )


def stage_context(run: Run) -> CondenseContext:
    """Load the training pairs (backbone weights, text features: cached) and return the context stages build in."""
    return context(run, run.load_pairs()[0])


def prepare(run: Run, stages: Iterable[str] = ()) -> None:
    """Compute into the cache what runs share: backbone weights, text features, and `stages`."""
    ctx = stage_context(run)
    with costs.collecting(run.run_key), one_thread():  # a stamp names the run it was prepared for
        for name in stages:
            run.shared[name].build(run.condenser, ctx)


def reference_model(run: Run, train_pairs: Pairs, seed: int) -> VLModel:
    """A model trained on all training pairs with the shared trainer (the protocol's steps at FULL_DATA_LR),
    with a warning when it did not learn; cached per seed."""
    key = reference_key(StageInput(run.dataset, run.backbone, seed, run.spec.protocol), seed)

    def train_one() -> VLModel:
        log.info(f"training a full-data reference model (seed {seed}; cached in {cache_dir() / 'reference'})")
        model = run.backbone.build(seed, run.device)
        protocol = dataclasses.replace(run.spec.protocol, lr=FULL_DATA_LR)
        run.fit(model, TrainData.from_pairs(train_pairs), seed, None, f"reference model seed {seed}", protocol)
        warn_if_unlearned(model, train_pairs, protocol.batch_size, seed, run.device)
        return model

    return cached("reference", f"{run.dataset.name}-{key}.safetensors", train_one,
                  lambda path: _load_state(run.backbone.build(seed, run.device), path),
                  lambda model, path: save_tensors(model.trainable_parameters(), path), stage="reference_model")


def _load_state(model: VLModel, path: Path) -> VLModel:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=False)
    return model


def condensed_set(run: Run, train_pairs: Pairs) -> tuple[CondensedSet, Path, bool]:
    """The run's condensed set in canonical pixels, where it is cached, and whether it was there already.

    Condensed under a lock beside it: runs that share the set (other evaluation backbones) wait for one.
    """
    spec = run.spec
    path = cache_dir() / "condensed" / f"{spec.condenser}-{spec.budget}-{run.condense_key}"
    with file_lock(cache_dir() / "locks" / f"condensed-{path.name}.lock"):  # not among the sets
        if (path / "manifest.json").exists():
            log.info(f"reusing condensed set {path}")
            # a set cached before canonical pixels is in the condensing backbone's space: migrated here, once
            return CondensedSet.load(path).to_canonical(run.backbone.normalization), path, True
        return _condense(run, train_pairs, path), path, False


def _condense(run: Run, train_pairs: Pairs, path: Path) -> CondensedSet:
    """Condense into `path`, resuming an interrupted attempt; charged for every attempt's time."""
    key, spec = run.condense_key, run.spec
    ctx = context(run, train_pairs)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    attempts = ctx.work_dir / "attempts.json"  # seconds spent by earlier, interrupted attempts
    earlier = json.loads(attempts.read_text()) if attempts.exists() else []
    start = time.perf_counter()
    try:
        with costs.collecting(run.run_key) as shared:
            condensed = _call_condenser(run, ctx)
    except KeyboardInterrupt:
        atomic_write_json(attempts, [*earlier, round(time.perf_counter() - start, 3)])
        raise
    _validate(run, condensed)
    own = round(time.perf_counter() - start + sum(earlier), 3)
    condensed.meta.update(condenser=spec.condenser, config=run.condenser.config_dict(), key=key,
                          cost={"own_s": own, "attempts": len(earlier) + 1, "shared": shared})
    condensed = condensed.to_canonical(run.backbone.normalization)  # stored backbone-independent (vlbench.pixels)
    condensed.save(path)
    shutil.rmtree(ctx.work_dir, ignore_errors=True)  # resume state is scratch once the set is saved
    return condensed


def _call_condenser(run: Run, ctx: CondenseContext) -> CondensedSet:
    """condense(); a failure is one line naming the plugin, and leaves no resume state behind."""
    try:
        with one_thread():  # one summation order: the same set on any machine (vlbench/parallel.py)
            return run.condenser.condense(ctx)
    except KeyboardInterrupt:
        raise  # an interrupted condense resumes from its work dir
    except VLBenchError:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
        raise PluginError(f"condenser {run.spec.condenser!r} ({run.distribution}) failed: "
                          f"{type(e).__name__}: {e} (rerun with --traceback for the trace)") from e


def _validate(run: Run, condensed: CondensedSet) -> None:
    """Refuse a set that breaks the contract before anything caches or trains on it."""
    try:
        validation.check_condensed(condensed, validation.Expected.of(
            run.condenser, run.backbone, run.spec.budget, run.dataset.split("train").num_pairs))
    except validation.InvalidSet as e:
        raise PluginError(f"condenser {run.spec.condenser!r} ({run.distribution}) returned an invalid set: {e}; "
                          "nothing was cached") from e
