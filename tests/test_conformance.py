"""The conformance kit: it passes a good condenser and every built-in one, and fails one small
bad condenser per rule on exactly that rule."""
import pytest
import torch

from vlbench.api import CondensedSet, Condenser, VLBenchError
from vlbench.plugins import Registry
from vlbench.testing import RULES, ConformanceError, check_condenser


@pytest.fixture(autouse=True)
def kit_cache(tmp_path_factory, monkeypatch):
    # One cache for the session: the kit's data slice is generated and encoded once.
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "kit-cache"))


class Good(Condenser):
    """Seeded random pairs, with the budget checked: the contract in a few lines."""

    name = "good"

    def pick(self, ctx):
        if ctx.budget > len(ctx.train):
            raise VLBenchError(f"budget {ctx.budget} exceeds the {len(ctx.train)} training pairs")
        generator = torch.Generator().manual_seed(ctx.seed)
        return torch.randperm(len(ctx.train), generator=generator)[: ctx.budget]

    def condense(self, ctx):
        return CondensedSet.from_indices(ctx.train, self.pick(ctx).tolist())


class OneShort(Good):
    def condense(self, ctx):
        return CondensedSet.from_indices(ctx.train, self.pick(ctx)[:-1].tolist())


class Float64Images(Good):
    def condense(self, ctx):
        out = super().condense(ctx)
        out.images = out.images.double()
        return out


class PixelsOutOfRange(Good):
    """Pixels 15x outside the image range: what a third party's distiller returned, and the runner refused."""

    def condense(self, ctx):
        out = super().condense(ctx)
        return CondensedSet(out.images * 15, out.text_features, meta=out.meta)


class BlackAsMinusOne(Good):
    """Black written as -1: right only where the normalisation is mean 0.5, std 0.5 (the default backbone's)."""

    def condense(self, ctx):
        out = super().condense(ctx)
        return CondensedSet(torch.full_like(out.images, -1.0), out.text_features, meta=out.meta)


class WrongSourceIndices(Good):
    def condense(self, ctx):
        out = super().condense(ctx)
        out.source_indices = out.source_indices.roll(1)
        return out


class UndeclaredLearnedLrs(Good):
    def condense(self, ctx):
        out = super().condense(ctx)
        out.learned_lrs = {"image": 0.1, "text": 0.1}
        return out


class UndeclaredReferenceModel(Good):
    def condense(self, ctx):
        ctx.reference_model(ctx.seed)
        return super().condense(ctx)


class RequiresAnUnregisteredStage(Good):
    requires = frozenset({"expert_bufer"})


class GlobalRandomness(Good):
    def condense(self, ctx):
        self.pick(ctx)  # for its budget check
        return CondensedSet.from_indices(ctx.train, torch.randperm(len(ctx.train))[: ctx.budget].tolist())


class TupleInMeta(Good):
    def condense(self, ctx):
        return CondensedSet.from_indices(ctx.train, self.pick(ctx).tolist(), grid=(3, 3))


class NormalisesInPlace(Good):
    def condense(self, ctx):
        ctx.train.text_features /= ctx.train.text_features.norm(dim=1, keepdim=True)
        return super().condense(ctx)


class ReturnsViews(Good):
    def condense(self, ctx):
        self.pick(ctx)
        return CondensedSet(images=ctx.train.images[: ctx.budget], text_features=ctx.train.text_features[: ctx.budget])


class NoBudgetCheck(Good):
    def condense(self, ctx):
        picked = torch.randperm(len(ctx.train), generator=torch.Generator().manual_seed(ctx.seed))[: ctx.budget]
        return CondensedSet.from_indices(ctx.train, picked.tolist())


class WrongErrorType(Good):
    def condense(self, ctx):
        if ctx.budget > len(ctx.train):
            raise IndexError("index out of range")
        return super().condense(ctx)


BROKEN = [
    (OneShort, "budget", "returned 9 pairs for budget 10"),
    (PixelsOutOfRange, "pixel-range", "pixels leave the valid image range by 14"),
    (Float64Images, "shapes", "images must be float32 of shape (10, 3, 36, 36), got torch.float64"),
    (WrongSourceIndices, "provenance", "pair 0 claims training pair"),
    (UndeclaredLearnedLrs, "extras", "stores learned_lrs without declaring it"),
    (UndeclaredReferenceModel, "requires", "uses reference_model without declaring it"),
    (RequiresAnUnregisteredStage, "requires", "requires shared stage(s) expert_bufer that no plugin registers "
                                              "(registered: expert_buffer, forgetting_history, reference_model)"),
    (GlobalRandomness, "determinism", "two runs with seed 0 differ: images differ"),
    (TupleInMeta, "round-trip", "meta changed from {'grid': (3, 3)} to {'grid': [3, 3]}"),
    (NormalisesInPlace, "no-mutation", "modified the input pairs' text_features"),
    (ReturnsViews, "no-mutation", "the returned images share memory with the input images"),
    (NoBudgetCheck, "budget-too-large", "budget 201 > 200 training pairs returned 200 pairs instead of raising"),
    (WrongErrorType, "budget-too-large", "raised IndexError: index out of range, not a VLBenchError"),
]


def test_a_conforming_condenser_passes_every_rule():
    report = check_condenser(Good, budget=10)
    assert report.passed == list(RULES) and len(report.condensed) == 10


@pytest.mark.parametrize("cls, rule, message", BROKEN, ids=[c.__name__ for c, _, _ in BROKEN])
def test_each_broken_rule_is_caught_precisely(cls, rule, message):
    with pytest.raises(ConformanceError) as e:
        check_condenser(cls, budget=10)
    assert e.value.failures.keys() == {rule}  # no other rule is blamed
    assert message in e.value.failures[rule]
    assert f"  {rule}: " in str(e.value)


def test_every_rule_has_a_bad_condenser():
    assert {rule for _, rule, _ in BROKEN} == set(RULES)


def test_the_kit_applies_every_check_the_runner_applies():
    from vlbench import validation

    assert set(validation.CHECKS) <= set(RULES)


def test_a_second_backbone_catches_what_the_default_cannot():
    """-1 is black only under the default backbone's normalisation: convnet-minilm's (mean 0.13, std 0.15)
    puts black at -0.87, so the same set leaves its image range."""
    check_condenser(BlackAsMinusOne, budget=10)
    with pytest.raises(ConformanceError) as e:
        check_condenser(BlackAsMinusOne, budget=10, backbone="convnet-minilm")
    assert e.value.failures.keys() == {"pixel-range"}


def test_the_kit_runs_on_pretrained_weights(tmp_path):
    from vlbench.testing import make_context

    report = check_condenser(Good, budget=10, backbone="tinyvit-minilm")  # its defaults: the shipped checkpoint
    assert report.backbone == "tinyvit-minilm"
    assert make_context(tmp_path, 1, backbone="tinyvit-minilm").backbone.weight_files()["image_encoder"].is_file()


def test_a_condenser_that_raises_fails_with_its_error():
    class Crashes(Good):
        def condense(self, ctx):
            raise KeyError("boom")

    with pytest.raises(ConformanceError, match="condense: condense\\(\\) raised KeyError: 'boom'"):
        check_condenser(Crashes)


def test_an_instance_is_checked_as_configured():
    with pytest.raises(ConformanceError, match="  budget: "):
        check_condenser(OneShort())
    with pytest.raises(ValueError, match="not with an instance"):
        check_condenser(Good(), options={"x": 1})


def test_a_budget_the_slice_cannot_hold_is_the_callers_error():
    with pytest.raises(ValueError, match="budget must be between 1 and the slice's 200 pairs"):
        check_condenser(Good, budget=201)


def test_a_class_register_would_reject_fails_the_interface_rule():
    with pytest.raises(ConformanceError, match="interface: .*does not implement condense"):
        check_condenser(type("Unfinished", (Condenser,), {"name": "unfinished"}))


# The distillers run for minutes with their default options (lors took 193 s here): test_distill.py,
# test_lors.py and test_mmdm.py check them with small ones.
BUILTINS = [n for n in Registry().names("condenser")
            if not Registry().get("condenser", n).trains_on_full_data and n not in ("tm", "tm-lora", "lors", "mmdm")]


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_condensers_conform(name):
    check_condenser(Registry().get("condenser", name), budget=10)
