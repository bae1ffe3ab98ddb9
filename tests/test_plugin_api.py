"""The helpers every method needs, public outside vlbench.tm: seeds, the pixel range, random's pairs."""
import pytest
import torch

import vlbench
from vlbench.plugins import Registry
from vlbench.testing import make_context


@pytest.fixture(autouse=True)
def kit_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "kit-cache"))


def test_derived_seed_is_public_and_the_tm_engine_uses_the_same_one():
    import vlbench.tm

    assert vlbench.derived_seed is vlbench.tm.derived_seed
    # the value every expert buffer on disk was trained with (expert 0 of seed 0): unchanged
    assert vlbench.derived_seed("expert", 0, 0) == 123892238948659


def test_pixel_range_is_the_normalised_image_of_0_1_and_the_tm_bounds():
    from vlbench.tm import pixel_bounds

    low, high = vlbench.pixel_range(((0.5, 0.25, 0.0), (0.5, 0.25, 2.0)))
    assert low.flatten().tolist() == [-1.0, -1.0, 0.0] and high.flatten().tolist() == [1.0, 3.0, 0.5]
    backbone = Registry().get("backbone", "convnet-minilm")()
    bounds = pixel_bounds(backbone, torch.ones(2, 3), "cpu")
    assert all(torch.equal(a, b) for a, b in zip((bounds.pixel_low, bounds.pixel_high),
                                                  vlbench.pixel_range(backbone.normalization)))


def test_random_pairs_are_randoms_set_and_a_seeded_draw(tmp_path):
    ctx = make_context(tmp_path, budget=10, seed=3)
    picked = vlbench.random_pairs(ctx)
    condensed = Registry().get("condenser", "random")().condense(ctx)
    assert torch.equal(condensed.source_indices, picked)
    # the draw `random` has always made, so its committed records keep their numbers
    assert picked.tolist() == torch.randperm(200, generator=torch.Generator().manual_seed(3))[:10].tolist()
    with pytest.raises(vlbench.VLBenchError, match="between 1 and the 200 training pairs"):
        vlbench.random_pairs(make_context(tmp_path, budget=201))
