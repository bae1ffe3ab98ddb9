"""Canonical pixels: condensed sets are stored in [0, 1] RGB and read back by any backbone."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlbench.api import FORMAT, CondensedSet, RunSpec, TrainProtocol, VLBenchError
from vlbench.data.images import decode_images, load_images
from vlbench.data.synthscenes import SynthScenes, generate
from vlbench.data.pairs import load_pairs
from vlbench.pixels import CANONICAL, for_backbone, to_canonical
from vlbench.plugins import registry
from vlbench.runner import run
from vlbench.train import TrainData, evaluate, train

HALF = ((0.5,) * 3, (0.5,) * 3)  # tinyvit-minilm's normalisation
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # nfnet-bert's


class Target:
    """What `pixels_for` reads from a backbone: its resolution and normalisation."""

    def __init__(self, image_size, normalization):
        self.image_size, self.normalization = image_size, normalization


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A small synthscenes tree (36 px PNGs) and its training image files."""
    root = tmp_path_factory.mktemp("pixels") / "data"
    generate(root, 0, train=40, val=4, test=20, pretrain=0)
    return root, sorted((root / "images").rglob("*.png"))[:24]


def test_real_images_round_trip_bit_for_bit_and_canonical_is_the_8_bit_value(scenes):
    """Canonical is the decoded value up to float rounding; the way back to the same backbone is exact."""
    _, paths = scenes
    normalised = load_images(paths, 36, *HALF)
    canonical = to_canonical(normalised, HALF)
    raw = torch.from_numpy(decode_images(paths, 36)).permute(0, 3, 1, 2)
    torch.testing.assert_close(canonical, raw.float() / 255, rtol=0, atol=2**-24)
    assert torch.equal(for_backbone(canonical, 36, HALF), normalised)  # the golden record depends on this


def test_distilled_pixels_keep_their_values_outside_the_range():
    g = torch.Generator().manual_seed(0)
    distilled = 3 * torch.randn(8, 3, 36, 36, generator=g)  # far outside [0, 1] once mapped
    for normalization in (HALF, IMAGENET):
        canonical = to_canonical(distilled, normalization)
        assert canonical.min() < -1 and canonical.max() > 2  # not clamped
        torch.testing.assert_close(for_backbone(canonical, 36, normalization), distilled, rtol=0, atol=2e-6)


def test_another_resolution_is_resized_as_real_images_are_decoded(scenes):
    _, paths = scenes
    canonical = to_canonical(load_images(paths, 36, *IMAGENET), IMAGENET)
    at_32 = for_backbone(canonical, 32, IMAGENET)
    decoded_at_32 = load_images(paths, 32, *IMAGENET)  # PIL's bicubic, from the files
    assert at_32.shape == decoded_at_32.shape == (len(paths), 3, 32, 32)
    std = torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)
    gap = (at_32 - decoded_at_32).abs() * std  # in [0, 1] units
    # PIL resizes in two 8-bit passes, clamping the bicubic overshoot at sharp edges; on average the two agree.
    assert gap.mean() < 0.002 and gap.max() > 0.1  # canonical pixels are not clamped, not even after a resize
    clamped = (to_canonical(at_32, IMAGENET).clamp(0, 1) - to_canonical(decoded_at_32, IMAGENET)).abs()
    assert clamped.max() < 0.06
    assert not torch.equal(at_32, for_backbone(canonical, 32, HALF))  # the target's own normalisation


def coreset(normalization, n=3):
    g = torch.Generator().manual_seed(1)
    images = to_canonical(torch.rand(n, 3, 36, 36, generator=g), ((0,) * 3, (1,) * 3))
    normalised = for_backbone(images, 36, normalization)
    return CondensedSet(normalised, torch.randn(n, 4, generator=g), source_indices=torch.arange(n), meta={"k": 1})


def test_the_manifest_records_format_space_and_resolution(tmp_path):
    condenser_output = coreset(IMAGENET)
    saved = condenser_output.to_canonical(IMAGENET)
    assert saved.canonical and not condenser_output.canonical
    assert saved.to_canonical(HALF) is saved  # canonical already: nothing to convert
    manifest = json.loads((saved.save(tmp_path / "set") / "manifest.json").read_text())
    assert manifest["format"] == FORMAT == 2
    assert manifest["pixels"] == {"space": CANONICAL, "size": [36, 36]}
    back = CondensedSet.load(tmp_path / "set")
    assert back.canonical and torch.equal(back.images, saved.images)
    torch.testing.assert_close(back.pixels_for(Target(36, IMAGENET)), condenser_output.images, rtol=0, atol=1e-6)
    assert back.pixels_for(Target(32, HALF)).shape == (3, 3, 32, 32)
    with pytest.raises(VLBenchError, match="to_canonical"):
        condenser_output.pixels_for(Target(36, IMAGENET))  # its space is a backbone's: it cannot be converted


def test_a_format_1_set_loads_in_its_backbone_space_and_a_newer_format_is_refused(tmp_path):
    condenser_output = coreset(HALF)
    directory = condenser_output.save(tmp_path / "old")
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["format"], manifest["pixels"]  # what vlbench wrote before canonical pixels
    (directory / "manifest.json").write_text(json.dumps(manifest))
    old = CondensedSet.load(directory)
    assert not old.canonical
    assert torch.equal(old.to_canonical(HALF).pixels_for(Target(36, HALF)), condenser_output.images)
    manifest["format"] = FORMAT + 1
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VLBenchError, match="format 3, newer"):
        CondensedSet.load(directory)


def test_a_run_stores_canonical_pixels_and_reads_a_set_cached_before_them_alike(scenes, tmp_path, monkeypatch):
    """The runner saves the coreset's 8-bit pixel values; a format-1 copy of it gives the same numbers."""
    root, _ = scenes
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    spec = RunSpec("random", 10, data_root=str(root), evals=1, backbone_options={"pretrained": None},
                   protocol=TrainProtocol(steps=10, batch_size=10))
    fresh = run(spec, tmp_path / "results", progress=False)
    directory = tmp_path / "cache" / "condensed" / next((tmp_path / "cache" / "condensed").iterdir()).name
    saved = CondensedSet.load(directory)
    assert saved.canonical and saved.images.min() >= 0 and saved.images.max() <= 1
    torch.testing.assert_close(saved.images * 255, (saved.images * 255).round(), rtol=0, atol=1e-5)  # 8-bit values
    # Evaluation trained on the very pixels the condenser returned: the backbone's own, not the stored ones.
    backbone = registry().get("backbone", "tinyvit-minilm")(pretrained=None)
    dataset = SynthScenes().load(root)
    train_pairs, test_pairs = (load_pairs(dataset, split, backbone) for split in ("train", "test"))
    images, text = train_pairs.select(saved.source_indices)
    model = train(backbone.build(0), TrainData.from_condensed(images, text), spec.protocol, seed=0)
    assert fresh["metrics"]["per_seed"] == [evaluate(model, test_pairs)]

    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["format"], manifest["pixels"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    stored = load_file(str(directory / "tensors.safetensors"))
    stored["images"] = for_backbone(stored["images"], 36, HALF)  # as format 1 stored it: the backbone's space
    save_file(stored, str(directory / "tensors.safetensors"))
    again = run(spec, tmp_path / "results", progress=False)
    assert again["stages"]["condense"]["cached"]
    assert again["metrics"]["per_seed"] == fresh["metrics"]["per_seed"]
