"""The official code's semantics, one switch at a time (docs/fidelity.md): each test fails when the
official value of its switch stops meaning what the official code does."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from test_distill import SPEC, tiny_model, tiny_pairs

from vlbench.api import CondenseContext, ImageTextDataset, Pairs, TrainProtocol, VLBenchError, stable_hash
from vlbench.data.karpathy import official_caption
from vlbench.plugins import registry
from vlbench.data.transforms import _geometry, _warp, expert_augment, rand_augment
from vlbench.tm import Bounds, DistillConfig, Distiller, ExpertBuffer, ExpertSpec, Student
from vlbench.tm.inner import _independent
from vlbench.train import clip_loss, make_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Every switch and its official value (the corrected presets hold vlbench's).
OFFICIAL = {
    "expert_weight_decay": 0.0, "expert_augment": "crop_flip_randaugment", "expert_text": "live", "init_augment": True,
    "start_epochs": "exclusive", "inner_batches": "independent", "inner_logit_scale": "log", "inner_optimizer": "plain",
    "lr_space": "linear", "max_grad_norm": None, "clamp_pixels": False, "renorm_text": False, "clamp_lrs": False,
}
OFFICIAL_PROTOCOL = {"augment": False, "learned_lr_sides": "image"}
#: The fields of an unaugmented expert spec's key before later ones (precision, text) joined it at their old values.
OLD_SPEC_FIELDS = ("lr", "momentum", "weight_decay", "batch_size", "seed")


def official_distiller(trajectories, tmp_path, **overrides) -> tuple[Distiller, Bounds]:
    pairs = tiny_pairs()
    images, text = pairs.select(torch.arange(6))
    switches = {k: v for k, v in OFFICIAL.items() if k in DistillConfig.__dataclass_fields__}
    config = DistillConfig(**{"iterations": 3, "syn_steps": 3, "max_start_epoch": 2, "batch_syn": 4, "lr_img": 1.0,
                              "lr_txt": 1.0, "lr_lr": 0.01, "lr_init": 0.5, "learn_lrs": True, **switches, **overrides})
    d = Distiller(Student(tiny_model()), trajectories, images, text, config, seed=0, state_path=tmp_path / "state.pt")
    return d, Bounds(pixel_low=torch.tensor(-0.05), pixel_high=torch.tensor(0.05), text_norm=0.5 * text.norm(dim=1, keepdim=True))


@pytest.fixture
def trajectories(vlbench_cache):
    return ExpertBuffer.locate("data", "tiny", SPEC).build(2, tiny_model, tiny_pairs())


# ----------------------------------------------------------------------------- presets


def load_runs(path: Path) -> list:
    from vlbench.plugins import registry
    from vlbench.config import expand, read_sweep

    specs = expand(read_sweep(path)["grid"])
    for spec in specs:  # every run builds: condenser options and data set options are valid
        registry().get("condenser", spec.condenser)(**spec.condenser_options)
        registry().get("dataset", spec.dataset)(**spec.dataset_options)
    return specs


@pytest.mark.parametrize("preset", ["flickr30k-tm", "flickr30k-tm-lora", "coco-tm", "coco-tm-lora"])
def test_official_and_corrected_presets_parse_and_differ_only_by_named_switches(preset):
    official, corrected = load_runs(CONFIGS / f"{preset}-official.yaml"), load_runs(CONFIGS / f"{preset}.yaml")
    assert [s.budget for s in official] == [s.budget for s in corrected] == [100, 200, 500, 1000]
    for ours, theirs in zip(corrected, official):
        assert {k: v for k, v in theirs.condenser_options.items() if k in OFFICIAL} == OFFICIAL
        assert {k for k in ours.condenser_options if ours.condenser_options[k] != theirs.condenser_options[k]} == set(OFFICIAL)
        assert theirs.dataset_options == {"caption_cleaning": "official"}
        assert ours.dataset_options == {"caption_cleaning": "vlbench"}
        protocol_diff = {k for k, v in vars(theirs.protocol).items() if getattr(ours.protocol, k) != v}
        assert protocol_diff == set(OFFICIAL_PROTOCOL)
        assert {k: getattr(theirs.protocol, k) for k in OFFICIAL_PROTOCOL} == OFFICIAL_PROTOCOL
        rest = ("condenser", "dataset", "backbone", "data_root", "evals", "seed", "split")
        assert all(getattr(ours, k) == getattr(theirs, k) for k in rest)
        # nfnet-bert takes the official code's CLIP statistics (open_clip models have them already) and its
        # head dropout, 0.1, by default; clip's head gets the official 0.1 in both faces
        assert ours.backbone_options == ({} if ours.backbone == "nfnet-bert" else {"dropout": 0.1})
        assert theirs.backbone_options == ({"normalization": "clip"} if ours.backbone == "nfnet-bert" else {"dropout": 0.1})
        assert ours.protocol.precision == theirs.protocol.precision == "fp32"  # the official code never autocasts
        assert ours.protocol.id != theirs.protocol.id  # tables never mix the two


def test_official_nfnet_normalisation_is_clips():
    from vlbench_plugins.nfnet_bert import NFNetBERT

    assert NFNetBERT(normalization="clip").normalization == ((0.48145466, 0.4578275, 0.40821073),
                                                             (0.26862954, 0.26130258, 0.27577711))
    assert tuple(NFNetBERT().normalization[0]) == pytest.approx((0.485, 0.456, 0.406))  # nfnet_l0's own: ImageNet's
    assert NFNetBERT().id == "nfnet-bert"  # the option's default leaves ids (and caches) as they were


def test_corrected_switch_values_are_the_vlbench_defaults():
    from vlbench_plugins.tm import TMConfig

    ours = load_runs(CONFIGS / "flickr30k-tm.yaml")[0]
    defaults = TMConfig()
    assert {k: ours.condenser_options[k] for k in OFFICIAL} == {k: getattr(defaults, k) for k in OFFICIAL}
    assert {k: getattr(ours.protocol, k) for k in OFFICIAL_PROTOCOL} == {k: getattr(TrainProtocol(), k) for k in OFFICIAL_PROTOCOL}


# ----------------------------------------------------------------------------- (a) evaluation augmentation


def test_official_protocol_trains_the_condensed_set_unaugmented():
    from vlbench.api import RunSpec
    from vlbench.data.transforms import random_resized_crop
    from vlbench.runner import Run

    def run(**protocol):
        return Run(RunSpec("random", 10, dataset="flickr30k", backbone="nfnet-bert", protocol=TrainProtocol(**protocol)))

    assert run(augment=False).augment is None
    assert run().augment is random_resized_crop


# ----------------------------------------------------------------------------- (b) expert augmentation


def test_official_rand_augment_changes_the_expected_share_of_images():
    """RandomAugment(2, 5): two ops drawn from ten, each applied with probability 1/2; at level 5
    identity, brightness (factor 1.0) and sharpness (1.0) leave an image as it is, so an image
    survives unchanged with probability (1 - 0.5 * 7/10)^2 = 0.4225."""
    g = torch.Generator().manual_seed(0)
    # 8-bit, never full range, and large enough (576 pixels) for equalize to act, as it does on photos
    images = torch.round((0.2 + 0.6 * torch.rand(3000, 3, 24, 24, generator=g)) * 255) / 255
    out = rand_augment(images, g)
    unchanged = (out - images).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert unchanged.float().mean().item() == pytest.approx(0.4225, abs=0.03)
    assert out.min() >= 0 and out.max() <= 1


def test_official_geometric_ops_move_by_their_level_and_fill_grey():
    images = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    shifted = _warp(images, _geometry("translate_x", 0.5, torch.tensor([1.0]), 24, 24))
    assert torch.allclose(shifted[..., 5:], images[..., :-5], atol=1e-5)  # level 5 of 10: 5 pixels
    assert torch.allclose(shifted[..., :5], torch.full_like(shifted[..., :5], 128 / 255))
    rotated = _geometry("rotate", 0.5, torch.tensor([1.0]), 24, 24)
    assert math.degrees(math.atan2(rotated[0, 0, 1], rotated[0, 0, 0])) == pytest.approx(15)


def test_official_experts_train_on_augmented_images_and_unaugmented_buffers_keep_their_keys(vlbench_cache):
    import dataclasses

    spec = ExpertSpec(**{**dataclasses.asdict(SPEC), "augment": "crop_flip_randaugment",
                         "normalization": ((0.5,) * 3, (0.25,) * 3)})
    old_key = stable_hash(["data", "tiny", {**{k: getattr(SPEC, k) for k in OLD_SPEC_FIELDS}, "epochs": None}])
    assert ExpertBuffer.locate("data", "tiny", SPEC).directory.name == f"tiny-{old_key}"
    assert ExpertBuffer.locate("data", "tiny", spec).directory != ExpertBuffer.locate("data", "tiny", SPEC).directory
    plain = ExpertBuffer.locate("data", "tiny", SPEC).build(1, tiny_model, tiny_pairs())
    augmented = ExpertBuffer.locate("data", "tiny", spec).build(1, tiny_model, tiny_pairs())
    assert all(torch.equal(plain[0][0][k], augmented[0][0][k]) for k in plain[0][0])  # same start
    assert not all(torch.equal(plain[0][1][k], augmented[0][1][k]) for k in plain[0][1])
    with pytest.raises(VLBenchError, match="expert augmentation"):
        expert_augment("randaugment", None)


# ----------------------------------------------------------------------------- (t) expert text features


@pytest.mark.parametrize("encoder", ["bert", "minilm"])
def test_official_expert_text_is_the_encoder_in_train_mode_and_leaves_it_in_eval_mode(encoder, tmp_path):
    from tiny_models import write_tiny_bert

    from vlbench.text_encoders import BertCLSEncoder
    from vlbench_plugins.tinyvit_minilm import minilm_encoder

    text_encoder = BertCLSEncoder(str(write_tiny_bert(tmp_path))) if encoder == "bert" else minilm_encoder()
    captions = ["a photo of a red dog on the tree", "two small cats", "a big blue car with a tree"]
    cached = text_encoder.encode(captions)

    def live(seed):
        torch.manual_seed(seed)  # dropout draws from the global RNG, which the trainer seeds
        return text_encoder.train_mode_encode(captions, torch.device("cpu"))

    assert torch.equal(live(0), live(0))
    assert not torch.allclose(live(0), live(1), atol=1e-3)  # dropout is on
    assert not torch.allclose(live(0), cached, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(live(0), cached).min() > 0.5  # the same encoder
    assert torch.allclose(text_encoder.encode(captions), cached, atol=1e-6)  # back in eval mode


def test_official_experts_recompute_live_text_every_batch_and_cached_buffers_keep_their_keys(vlbench_cache, tmp_path):
    import dataclasses

    from tiny_models import WORDS, write_tiny_bert

    from vlbench.modules import DualEncoder
    from vlbench.text_encoders import BertCLSEncoder

    class Counting(BertCLSEncoder):
        calls = 0

        def train_mode_encode(self, captions, device):
            Counting.calls += 1
            return super().train_mode_encode(captions, device)

    text_encoder = Counting(str(write_tiny_bert(tmp_path / "bert")))
    base = tiny_pairs()
    captions = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(4)) for i in range(len(base))]
    pairs = Pairs(base.images, base.pair_image, text_encoder.encode(captions), captions)

    def model(seed):
        torch.manual_seed(seed)
        return DualEncoder(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 8)), 8, 16, 5)

    live = dataclasses.replace(SPEC, text="live")
    old_key = stable_hash(["data", "tiny", {**{k: getattr(SPEC, k) for k in OLD_SPEC_FIELDS}, "epochs": None}])
    assert ExpertBuffer.locate("data", "tiny", SPEC).directory.name == f"tiny-{old_key}"  # cached: as before
    assert ExpertBuffer.locate("data", "tiny", live).directory != ExpertBuffer.locate("data", "tiny", SPEC).directory
    cached_run = ExpertBuffer.locate("data", "tiny", SPEC).build(1, model, pairs, text_encoder=text_encoder)
    assert Counting.calls == 0
    live_run = ExpertBuffer.locate("data", "tiny", live).build(1, model, pairs, text_encoder=text_encoder)
    steps_per_epoch = -(-len(pairs) // SPEC.batch_size)
    assert Counting.calls == SPEC.epochs * steps_per_epoch  # one encoder forward per batch
    assert all(torch.equal(cached_run[0][0][k], live_run[0][0][k]) for k in live_run[0][0])  # same start
    head = "text_head.proj.weight"
    assert (cached_run[0][1][head] - live_run[0][1][head]).abs().max() > 1e-3
    with pytest.raises(VLBenchError, match="expert text"):
        dataclasses.replace(SPEC, text="dropout")


def test_official_expert_text_switch_reaches_the_expert_spec():
    from vlbench_plugins.tm import TrajectoryMatching

    ctx = condense_context()
    assert TrajectoryMatching(expert_text="live").expert_spec(ctx).text == "live"
    assert TrajectoryMatching().expert_spec(ctx).text == "cached"
    assert "expert_text" not in TrajectoryMatching().config_dict()  # run and condense keys as before
    assert TrajectoryMatching(expert_text="live").config_dict()["expert_text"] == "live"


# ----------------------------------------------------------------------------- precision


def test_experts_train_at_the_protocol_precision_and_fp32_buffers_keep_their_keys():
    from vlbench_plugins.tm import TrajectoryMatching

    bf16 = TrajectoryMatching().expert_spec(condense_context(protocol=TrainProtocol(precision="bf16")))
    fp32 = TrajectoryMatching().expert_spec(condense_context())
    assert bf16.protocol(steps=1).precision == "bf16" and fp32.protocol(steps=1).precision == "fp32"
    assert set(fp32.key_fields()) == {*OLD_SPEC_FIELDS, "epochs"}
    assert bf16.key_fields()["precision"] == "bf16"


# ----------------------------------------------------------------------------- (c) expert weight decay, (g) inner SGD


def condense_context(name: str = "flickr30k", protocol: TrainProtocol | None = None, train: Pairs | None = None,
                     work_dir: Path = Path("unused"), flip_safe: bool | None = None) -> CondenseContext:
    """A context as the runner makes it for data set `name` (its source's flip_safe unless given)."""
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

    return CondenseContext(dataset=ImageTextDataset(name, Path("."), {}, "fp"), train=train, budget=6, seed=0,
                           backbone=TinyViTMiniLM(pretrained=None, depth=1, width=24, heads=2),
                           device=torch.device("cpu"), protocol=protocol or TrainProtocol(), work_dir=work_dir,
                           flip_safe=registry().get("dataset", name).flip_safe if flip_safe is None else flip_safe)


def test_official_expert_optimiser_has_no_weight_decay():
    from vlbench_plugins.tm import TrajectoryMatching

    ctx = condense_context(protocol=TrainProtocol(weight_decay=5e-4))
    official = TrajectoryMatching(expert_weight_decay=0.0).expert_spec(ctx)
    optimizer = make_optimizer(tiny_model(), official.protocol(steps=1))
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0}
    assert TrajectoryMatching().expert_spec(ctx).weight_decay == 5e-4  # vlbench: the protocol's


def test_official_inner_loop_is_plain_sgd():
    from vlbench_plugins.tm import TrajectoryMatching

    protocol = TrainProtocol(momentum=0.9, weight_decay=5e-4, learned_lr_momentum=0.9)
    assert TrajectoryMatching(inner_optimizer="plain", learn_lrs=True).inner_sgd(protocol) == (0.0, 0.0)
    assert TrajectoryMatching(learn_lrs=True).inner_sgd(protocol) == (5e-4, 0.9)
    # plain SGD, theta <- theta - lr * grad, on a fresh random batch_syn of the N pairs at every step
    student, pairs = Student(tiny_model()), tiny_pairs()
    images, text = pairs.select(torch.arange(6))
    start = [p.detach().clone() for p in student.model.trainable_parameters().values()]
    lrs = {"image": torch.tensor(0.3), "text": torch.tensor(0.2)}
    final = student.unroll(start, images, text, lrs, 4, 4, torch.Generator().manual_seed(0), independent_batches=True)
    params, draws = start, _independent(6, 4, torch.Generator().manual_seed(0))
    for _, idx in zip(range(4), draws):
        params = [p.detach().requires_grad_(True) for p in params]
        grads = torch.autograd.grad(student.loss(params, images[idx], text[idx]), params)
        params = [p - lrs[side] * g for p, g, side in zip(params, grads, student.sides)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(final, params))


# ----------------------------------------------------------------------------- (d) start epochs, inner batches, (f) logit scale


def test_official_start_epochs_are_exactly_0_and_1(trajectories, tmp_path):
    official, _ = official_distiller(trajectories, tmp_path)
    assert {official.draw(i)[1] for i in range(300)} == {0, 1}  # np.random.randint(0, 2)
    ours, _ = official_distiller(trajectories, tmp_path, start_epochs="inclusive")
    assert {ours.draw(i)[1] for i in range(300)} == {0, 1, 2}
    with pytest.raises(VLBenchError, match="max_start_epoch"):
        DistillConfig(start_epochs="exclusive", max_start_epoch=0)


def test_official_inner_loss_uses_the_unexponentiated_logit_scale():
    student, pairs = Student(tiny_model()), tiny_pairs()
    images, text = pairs.select(torch.arange(8))
    params = list(student.model.trainable_parameters().values())
    image_emb, text_emb = student.model(images, text)
    scale = math.log(1 / 0.07)
    assert scale == pytest.approx(2.659, abs=1e-3)
    manual = clip_loss(image_emb * scale, text_emb, 1.0)
    assert student.loss(params, images, text, log_logit_scale=True).item() == pytest.approx(manual.item(), rel=1e-6)
    assert student.loss(params, images, text).item() == pytest.approx(clip_loss(image_emb, text_emb, 0.07).item(), rel=1e-6)


def test_the_distiller_hands_the_official_switches_to_the_inner_loop(trajectories, tmp_path, monkeypatch):
    seen = {}
    real = Student.unroll

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Student, "unroll", spy)
    official_distiller(trajectories, tmp_path)[0].matching(0)
    assert {k: seen[k] for k in ("independent_batches", "log_logit_scale")} == {"independent_batches": True, "log_logit_scale": True}


def test_official_inner_batches_are_independent_draws():
    g = torch.Generator().manual_seed(0)
    draws = [b for _, b in zip(range(200), _independent(10, 4, g))]
    assert all(len(b) == 4 == len(set(b.tolist())) for b in draws)
    # an epoch-wise walk never repeats a pair within 2 batches of one epoch; independent draws do
    assert any(set(a.tolist()) & set(b.tolist()) for a, b in zip(draws[::2], draws[1::2]))


# ----------------------------------------------------------------------------- (h) lr space, (i) safeguards


def test_official_outer_step_is_plain_sgd_on_raw_pixels_text_and_lrs(trajectories, tmp_path):
    """With every safeguard off and lrs learned directly, one outer step is exactly
    x <- x - lr_x * dL/dx for pixels, text and the inner lrs themselves (momentum's first step)."""
    d, bounds = official_distiller(trajectories, tmp_path, lr_img=5.0, lr_txt=5.0, lr_lr=5.0)
    assert d.lr_param.tolist() == [0.5, 0.5]  # the lr itself, not its log
    before = [t.detach().clone() for t in (d.images, d.text, d.lr_param)]
    grads = torch.autograd.grad(sum(d.matching(0).values()), [d.images, d.text, d.lr_param])
    d.step(bounds)
    for rate, old, grad, new in zip((5.0, 5.0, 5.0), before, grads, (d.images, d.text, d.lr_param)):
        assert torch.allclose(new, old - rate * grad, atol=1e-6)
    assert d.images.abs().max() > 0.05  # not clamped to the bounds
    assert not torch.allclose(d.text.norm(dim=1, keepdim=True), bounds.text_norm)  # not renormalised


def test_a_non_positive_official_lr_stops_the_run(trajectories, tmp_path):
    d, bounds = official_distiller(trajectories, tmp_path, lr_init=1e-6, lr_lr=100.0)
    with pytest.raises(VLBenchError, match="inner lr became"):
        d.run(bounds)


@pytest.mark.parametrize("switch, value", [("max_grad_norm", 1e-3), ("clamp_pixels", True), ("renorm_text", True),
                                           ("clamp_lrs", True)])
def test_each_safeguard_switches_on_alone(trajectories, tmp_path, switch, value):
    d, bounds = official_distiller(trajectories, tmp_path, lr_img=5.0, lr_txt=5.0, lr_lr=5.0, lr_min=0.3, lr_max=0.3,
                                   **{switch: value})
    before = [t.detach().clone() for t in (d.images, d.text)]
    d.step(bounds)
    moved = [(new - old).norm().item() for new, old in zip((d.images, d.text), before)]
    assert (max(moved) <= 5.0 * 1e-3 + 1e-6) == (switch == "max_grad_norm")
    assert (d.images.abs().max() <= 0.05 + 1e-6) == (switch == "clamp_pixels")
    assert torch.allclose(d.text.norm(dim=1, keepdim=True), bounds.text_norm) == (switch == "renorm_text")
    assert (d.lrs == pytest.approx({"image": 0.3, "text": 0.3})) == (switch == "clamp_lrs")


def test_vlbench_learns_log_lrs(trajectories, tmp_path):
    d, _ = official_distiller(trajectories, tmp_path, lr_space="log")
    assert d.lr_param.tolist() == pytest.approx([math.log(0.5)] * 2)
    assert d.lrs == pytest.approx({"image": 0.5, "text": 0.5})


# ----------------------------------------------------------------------------- synthetic init, caption cleaning


@pytest.mark.parametrize("init_augment", [False, True])
def test_official_synthetic_set_starts_from_augmented_samples(vlbench_cache, tmp_path, init_augment):
    from vlbench_plugins.tm_lora import LoRATrajectoryMatching

    g = torch.Generator().manual_seed(0)
    images = (torch.rand(12, 3, 36, 36, generator=g) - 0.45) / 0.27
    train = Pairs(images, torch.arange(24) % 12, torch.randn(24, 384, generator=g), [f"c{i}" for i in range(24)])
    ctx = condense_context("flickr30k", train=train, work_dir=tmp_path / "work")
    condenser = LoRATrajectoryMatching(iterations=0, num_experts=1, train_epochs=1, max_start_epoch=0,
                                       expert_augment="crop_flip_randaugment", init_augment=init_augment)
    condensed = condenser.condense(ctx)
    real, _ = train.select(torch.tensor(condensed.meta["init_indices"]))
    assert torch.equal(condensed.images, real) != init_augment
    with pytest.raises(VLBenchError, match="captions name positions"):
        condenser.condense(condense_context("synthscenes", train=train, work_dir=tmp_path / "work2"))
    # the context says so, not a registry lookup by name (a context may come from another registry)
    with pytest.raises(VLBenchError, match="captions name positions"):
        condenser.condense(condense_context("flickr30k", train=train, work_dir=tmp_path / "work3", flip_safe=False))
    with pytest.raises(VLBenchError, match="init_augment"):
        LoRATrajectoryMatching(init_augment=True)


TRICKY = {
    'A dog\'s "ball" (red).': "a dog's ball red",
    "Two men, one with a hat -- walk; fast!": "two men, one with a hat -- walk fast",
    "Tab\tand  spaces\n": "tab\tand spaces",
    "Ümlaut café ~ 3:30 #1*": "ümlaut café 3 30 1",
    "x" + " y" * 40: " ".join(["x"] + ["y"] * 29),
}


def test_official_caption_cleaning_is_pre_caption():
    for raw, cleaned in TRICKY.items():
        assert official_caption(raw) == cleaned, raw


def test_the_caption_cleaning_data_option(tmp_path):
    from PIL import Image

    from vlbench_plugins.flickr_coco import Flickr30K

    (tmp_path / "flickr30k-images").mkdir()
    entries = []
    for i, split in enumerate(["train", "val", "test"]):
        Image.new("RGB", (4, 4)).save(tmp_path / "flickr30k-images" / f"{i}.jpg")
        entries.append({"split": split, "filename": f"{i}.jpg", "sentences": [{"raw": r} for r in TRICKY]})
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    ours, theirs = Flickr30K().load(tmp_path), Flickr30K(caption_cleaning="official").load(tmp_path)
    assert theirs.split("train").captions[0] == list(TRICKY.values())
    assert ours.split("train").captions[0][0] == "a dogs ball red"
    assert ours.fingerprint != theirs.fingerprint  # cached caption features never mix the two
    # vlbench's cleaning keeps the fingerprint the data set had before the option existed
    h = hashlib.sha256((tmp_path / "dataset_flickr30k.json").read_bytes())
    for name in ("0.jpg", "1.jpg", "2.jpg"):
        h.update(name.encode() + b"\n")
    assert ours.fingerprint == h.hexdigest()[:16]
    with pytest.raises(VLBenchError, match="caption_cleaning"):
        Flickr30K(caption_cleaning="blip").load(tmp_path)


@pytest.mark.slow
def test_the_device_check_runs_its_smoke_path(tmp_path):
    """`scripts/gpu_check.sh --smoke`: the GPU check's commands end to end on the CPU (about 25 s of CPU
    time), so that the path a GPU user runs first cannot rot unseen."""
    import os
    import subprocess
    import sys

    script = CONFIGS.parent / "scripts" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), "--smoke"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "gpu_check: seconds per iteration: median" in done.stdout
    assert "precision, fp32" in done.stdout and "expert text live" in done.stdout  # the official preset's
    assert "mean recall" in done.stdout
