"""The conformance kit: check a condenser against vlbench's contract, in your own test suite.

    from vlbench.testing import check_condenser

    def test_my_condenser_conforms():
        check_condenser(MyCondenser, budget=10, options={"iterations": 2})

`check_condenser` condenses a small slice of the embedded synthscenes data set (40 training
images, 200 pairs, generated once into the vlbench cache) with the default backbone at random
initialisation, on the CPU, in seconds. It raises `ConformanceError` (an AssertionError, so
pytest reports it as a failure) with one line per broken rule; `RULES` lists them, the runner's
own set validation (`vlbench.validation`) among them. `backbone="convnet-minilm"` runs it on a
second backbone (another resolution and normalisation), `backbone="tinyvit-minilm"` on the default
backbone's pretrained weights. `make_context` hands out the same slice for tests of your own.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from vlbench import validation
from vlbench.api import (
    Backbone, CondensedSet, CondenseContext, Condenser, ImageTextDataset, Pairs, TrainProtocol, VLBenchError,
    VLModel, cache_dir,
)
from vlbench.parallel import one_thread
from vlbench.plugins import check_plugin_class, registry

RULES = {
    # the runner's own checks (vlbench.validation.CHECKS), applied as the runner applies them
    "budget": "returns exactly `budget` pairs",
    "shapes": "images (N, 3, S, S) and text features (N, d) are finite float32 without grad; extras are well-formed "
              "(soft targets dense (N, N) or factored, a positive target for every pair)",
    "extras": "every extra beyond the pairs (learned lrs, soft targets) is declared in `extras`",
    "pixel-range": "pixels lie in the backbone's valid image range, vlbench.pixel_range(backbone.normalization) "
                   "(unless the condenser declares unbounded pixels, `bounded_pixels()` False)",
    # what only repeated or instrumented calls can tell
    "provenance": "source indices, when given, point at the very training pairs returned",
    "requires": "every shared stage it declares in `requires` is registered, and every one it uses "
                "(ctx.reference_model) is declared",
    "determinism": "the same seed gives the same set",
    "round-trip": "save() then CondensedSet.load() gives back the same set, meta included",
    "no-mutation": "the input data set is left unchanged and shares no memory with the result",
    "budget-too-large": "a budget above the number of training pairs raises VLBenchError naming the numbers",
}
DEFAULT_BACKBONE = ("tinyvit-minilm", {"pretrained": None})  # random init: nothing to pretrain
#: Trains the reference model a condenser may ask for: a few steps, enough to be a real model.
PROTOCOL = TrainProtocol(steps=20, batch_size=32)


class ConformanceError(AssertionError):
    """A condenser breaks the contract; `failures` maps each broken rule to what went wrong."""

    def __init__(self, condenser: str, failures: dict[str, str]):
        self.failures = failures
        lines = [f"  {rule}: {message}" for rule, message in failures.items()]
        super().__init__(f"condenser {condenser!r} breaks {len(failures)} conformance rule(s):\n" + "\n".join(lines))


@dataclass
class ConformanceReport:
    """What `check_condenser` returns when every rule holds."""

    condenser: str
    budget: int
    backbone: str  # its id
    passed: list[str]
    seconds: float
    condensed: CondensedSet


class _Broken(Exception):
    """Raised by a rule's check with the one-line reason."""


# ----------------------------------------------------------------------------- the data slice


@dataclass
class _Slice:
    dataset: ImageTextDataset
    train: Pairs
    backbone: Backbone
    flip_safe: bool  # the data set's (synthscenes: its captions name positions)
    references: dict[int, VLModel] = field(default_factory=dict)  # trained once per seed, handed out as copies


_slices: dict[tuple, _Slice] = {}


def _backbone(backbone: Backbone | str | None) -> Backbone:
    """The default at random initialisation; a name with its defaults (pretrained weights); or as given."""
    if isinstance(backbone, Backbone):
        return backbone
    name, options = DEFAULT_BACKBONE if backbone is None else (backbone, {})
    return registry().get("backbone", name)(**options)


def _slice(train_images: int, backbone: Backbone | str | None) -> _Slice:
    """A few scenes of the embedded data set (generator seed 0), made and encoded once per cache and process."""
    from vlbench.data.synthscenes import GENERATOR_VERSION, SynthScenes, generate
    from vlbench.data.pairs import load_pairs

    backbone = _backbone(backbone)
    key = (str(cache_dir()), train_images, backbone.id)
    if key not in _slices:
        backbone.prepare()  # its pretrained weights, as a run prepares them
        root = cache_dir() / "conformance" / f"synthscenes-v{GENERATOR_VERSION}-{train_images}"
        if not (root / "VERSION").is_file():
            generate(root, 0, train=train_images, val=0, test=0, pretrain=0)
        dataset = SynthScenes().load(root)
        _slices[key] = _Slice(dataset, load_pairs(dataset, "train", backbone), backbone, SynthScenes.flip_safe)
    return _slices[key]


def _copy_pairs(pairs: Pairs) -> Pairs:
    return Pairs(pairs.images.clone(), pairs.pair_image.clone(), pairs.text_features.clone(), list(pairs.captions))


def _reference_model(data: _Slice, seed: int) -> VLModel:
    from vlbench.train import TrainData, train

    if seed not in data.references:
        data.references[seed] = train(data.backbone.build(seed), TrainData.from_pairs(data.train), PROTOCOL, seed)
    return copy.deepcopy(data.references[seed])


def _context(data: _Slice, budget: int, seed: int, work_dir: Path,
             on_use: Callable[[str], None] = lambda stage: None) -> CondenseContext:
    """A context with fresh copies of the slice; `on_use(stage)` hears of each shared stage used."""

    def reference_model(s: int) -> VLModel:
        on_use("reference_model")
        return _reference_model(data, s)

    work_dir.mkdir(parents=True, exist_ok=True)
    return CondenseContext(
        dataset=copy.deepcopy(data.dataset), train=_copy_pairs(data.train), backbone=data.backbone, budget=budget,
        seed=seed, device=torch.device("cpu"), protocol=PROTOCOL, work_dir=work_dir,
        reference_model=reference_model, flip_safe=data.flip_safe,
    )


def make_context(work_dir: Path, budget: int, *, seed: int = 0, train_images: int = 40,
                 backbone: Backbone | str | None = None) -> CondenseContext:
    """A CondenseContext on the kit's data slice (fresh copies: a condenser may not spoil the next)."""
    return _context(_slice(train_images, backbone), budget, seed, Path(work_dir))


# ----------------------------------------------------------------------------- comparisons


def _tensor_difference(name: str, a: Tensor | None, b: Tensor | None) -> str | None:
    if a is None or b is None:
        return None if a is b else f"{name} is {'missing' if b is None else 'present'} the second time"
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{name} changed from {a.dtype} {tuple(a.shape)} to {b.dtype} {tuple(b.shape)}"
    if not torch.equal(a, b):
        gap = (a.double() - b.double()).abs().max().item()
        return f"{name} differ (max abs difference {gap:.3g})"
    return None


def _compared(cs: CondensedSet) -> dict[str, Tensor | None]:
    """What must repeat: the pairs, the source indices, and the soft targets in their stored form."""
    return {"images": cs.images, "text_features": cs.text_features, "source_indices": cs.source_indices,
            **cs.target_tensors()}


def _difference(a: CondensedSet, b: CondensedSet, with_meta: bool) -> str | None:
    first, second = _compared(a), _compared(b)
    for name in {**first, **second}:
        found = _tensor_difference(name, first.get(name), second.get(name))
        if found:
            return found
    if a.learned_lrs != b.learned_lrs:
        return f"learned_lrs changed from {a.learned_lrs} to {b.learned_lrs}"
    if with_meta and a.meta != b.meta:
        return f"meta changed from {a.meta!r} to {b.meta!r}; keep meta to JSON types (dict, list, str, number)"
    return None


def _shares_memory(a: Tensor | None, b: Tensor) -> bool:
    return a is not None and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


# ----------------------------------------------------------------------------- the rules


class _Trial:
    """One condenser under test: makes contexts, condenses, and checks each rule."""

    def __init__(self, cls: type[Condenser], make: Callable[[], Condenser], budget: int, seed: int, data: _Slice,
                 work_dir: Path):
        self.cls, self.make, self.budget, self.seed, self.data, self.work_dir = cls, make, budget, seed, data, work_dir
        self.calls = 0
        self.stages_used: set[str] = set()
        self.ctx = self.new_context(budget)
        self.result = self.condense(self.ctx)
        self.expected = validation.Expected.of(make(), data.backbone, budget, len(self.ctx.train))

    def check(self, rule: str) -> None:
        """Raise _Broken if `rule` does not hold: the runner's own check where it has one."""
        if rule not in validation.CHECKS:
            return getattr(self, "check_" + rule.replace("-", "_"))()
        try:
            validation.CHECKS[rule](self.result, self.expected)
        except validation.InvalidSet as e:
            raise _Broken(str(e)) from None

    def new_context(self, budget: int) -> CondenseContext:
        self.calls += 1
        return _context(self.data, budget, self.seed, self.work_dir / f"call-{self.calls}", self.stages_used.add)

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        result = self.make().condense(ctx)
        if not isinstance(result, CondensedSet):
            raise _Broken(f"condense() returned {type(result).__name__}, not a CondensedSet")
        return result

    def check_provenance(self) -> None:
        r = self.result
        if r.source_indices is None:
            return
        images, text = self.ctx.train.select(r.source_indices)  # as given: changing them is no-mutation's to blame
        for k in range(len(r)):
            if not (torch.equal(r.images[k], images[k]) and torch.equal(r.text_features[k], text[k])):
                raise _Broken(f"pair {k} claims training pair {int(r.source_indices[k])} as its source but differs from it")

    def check_requires(self) -> None:
        known = registry().names("stage")  # what plugins registered (vlbench/stages.py)
        unknown = set(self.cls.requires) - set(known)
        if unknown:
            raise _Broken(f"requires shared stage(s) {', '.join(sorted(unknown))} that no plugin registers "
                          f"(registered: {', '.join(known)})")
        undeclared = self.stages_used - set(self.cls.requires)
        if undeclared:
            raise _Broken(f"uses {', '.join(sorted(undeclared))} without declaring it: "
                          f"set `requires = frozenset({sorted(self.stages_used)})` on the class")

    def check_determinism(self) -> None:
        # Meta may hold timings; only what is trained on has to repeat.
        found = _difference(self.result, self.condense(self.new_context(self.budget)), with_meta=False)
        if found:
            raise _Broken(f"two runs with seed {self.seed} differ: {found}")

    def check_round_trip(self) -> None:
        loaded = CondensedSet.load(self.result.save(self.work_dir / "saved"))
        found = _difference(self.result, loaded, with_meta=True)
        if found:
            raise _Broken(f"after save/load: {found}")

    def check_no_mutation(self) -> None:
        pristine, given = self.data.train, self.ctx.train
        for name in ("images", "pair_image", "text_features", "captions"):
            a, b = getattr(pristine, name), getattr(given, name)
            if not (torch.equal(a, b) if isinstance(a, Tensor) else a == b):
                raise _Broken(f"condense() modified the input pairs' {name}")
        if self.ctx.dataset != self.data.dataset:
            raise _Broken("condense() modified the input data set (its splits or captions)")
        for out, tensor in _compared(self.result).items():
            for source in ("images", "text_features"):
                if _shares_memory(tensor, getattr(given, source)):
                    raise _Broken(f"the returned {out} share memory with the input {source}: return copies (.clone())")

    def check_budget_too_large(self) -> None:
        n = len(self.ctx.train)
        budget = n + 1
        try:
            result = self.make().condense(self.new_context(budget))
        except VLBenchError as e:
            if str(budget) not in str(e) and str(n) not in str(e):
                raise _Broken(f"the error {str(e)!r} names neither the budget {budget} nor the {n} training pairs")
            return
        except Exception as e:
            raise _Broken(f"budget {budget} > {n} pairs raised {type(e).__name__}: {e}, not a VLBenchError "
                          "(the CLI prints VLBenchError as one clear line)")
        raise _Broken(f"budget {budget} > {n} training pairs returned {len(result)} pairs instead of raising VLBenchError")




def check_condenser(condenser: type[Condenser] | Condenser, *, budget: int = 10, options: dict[str, Any] | None = None,
                    seed: int = 0, train_images: int = 40, backbone: Backbone | str | None = None) -> ConformanceReport:
    """Check every rule in `RULES`; raise ConformanceError listing each broken one.

    `condenser` is a class (built with `options` for each call) or a configured instance. `backbone`: None
    (the default backbone at random initialisation), a registered name (built with its defaults, pretrained
    weights included), or a Backbone.
    """
    if isinstance(condenser, Condenser):
        if options:
            raise ValueError("pass options with a condenser class, not with an instance")
        cls, make = type(condenser), lambda: condenser
    else:
        cls, make = condenser, lambda: condenser(**(options or {}))
    try:
        check_plugin_class("condenser", cls)
    except VLBenchError as e:
        raise ConformanceError(getattr(cls, "name", repr(cls)), {"interface": str(e)}) from None
    if cls.trains_on_full_data:
        raise ValueError(f"condenser {cls.name!r} trains on the full data set: there is nothing condensed to check")
    start = time.perf_counter()
    make()  # bad options are the caller's error (VLBenchError), not a broken rule
    # one thread: the slice is tiny, and test suites run many processes at once
    with one_thread(), tempfile.TemporaryDirectory(prefix="vlbench-conformance-") as tmp:
        data = _slice(train_images, backbone)
        if not 0 < budget <= len(data.train):
            raise ValueError(f"budget must be between 1 and the slice's {len(data.train)} pairs "
                             f"(for more, raise train_images above {train_images}), got {budget}")
        try:
            trial = _Trial(cls, make, budget, seed, data, Path(tmp))
        except _Broken as e:
            raise ConformanceError(cls.name, {"condense": str(e)}) from None
        except Exception as e:
            raise ConformanceError(cls.name, {"condense": f"condense() raised {type(e).__name__}: {e}"}) from e
        failures: dict[str, str] = {}
        for rule in RULES:
            try:
                trial.check(rule)
            except _Broken as e:
                failures[rule] = str(e)
            except Exception as e:  # a rule that cannot even be checked is broken too
                failures[rule] = f"{type(e).__name__}: {e}"
    if failures:
        raise ConformanceError(cls.name, failures)
    return ConformanceReport(cls.name, budget, data.backbone.id, list(RULES), round(time.perf_counter() - start, 2),
                             trial.result)
