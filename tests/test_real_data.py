"""Flickr30K and COCO layouts in both annotation forms, the check command, image banks, augmentation, a full run."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tiny_models import write_tiny_bert
from vlbench.api import RunSpec, TrainProtocol, VLBenchError
from vlbench.cli import main
from vlbench.data.bank import image_bank
from vlbench.data.images import load_images
from vlbench.data.synthscenes import SynthScenes
from vlbench.data.transforms import random_resized_crop, train_augment
from vlbench.runner import Run
from vlbench_plugins.flickr_coco import COCO, Flickr30K

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COLOURS = ("red", "green", "blue")
NOUNS = ("dog", "cat", "car", "tree")


def captions_of(i: int, n: int) -> list[str]:
    """n captions naming image i's colour and noun, with the punctuation and case real captions have."""
    colour, noun = COLOURS[i % 3], NOUNS[i % 4]
    return [f"A {colour} {noun}, in the photo!" if k % 2 else f"The {noun} with {colour}." for k in range(n)]


def write_photo(path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(i).integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)  # odd sizes, like photos
    Image.fromarray(rgb).save(path, quality=90)


def flickr_tree(root, form: str, sizes=(("train", 6), ("val", 2), ("test", 3))) -> dict[str, list]:
    """A Flickr30K data root (images in flickr30k-images/); returns {split: [(relative path, captions)]}."""
    splits, i = {}, 0
    for split, n in sizes:
        splits[split] = []
        for _ in range(n):
            rel = f"flickr30k-images/{1000 + i}.jpg"
            write_photo(root / rel, i)
            splits[split].append((rel, captions_of(i, 5)))
            i += 1
    if form == "karpathy":
        images = [{"split": s, "filename": rel.split("/")[1], "sentences": [{"raw": c} for c in caps]}
                  for s, rows in splits.items() for rel, caps in rows]
        (root / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": images}))
    else:
        write_blip(root, splits, "flickr30k_{}.json")
    return splits


def coco_tree(root, form: str) -> dict[str, list]:
    """A COCO data root: train2014/ and val2014/, a restval image, an image with 6 captions."""
    rows = [("train", "train2014", 5), ("train", "train2014", 5), ("restval", "val2014", 5),
            ("val", "val2014", 5), ("test", "val2014", 6), ("test", "val2014", 5)]
    splits: dict[str, list] = {}
    images = []
    for i, (split, folder, n) in enumerate(rows):
        rel = f"{folder}/COCO_{folder}_{i:012d}.jpg"
        write_photo(root / rel, i)
        splits.setdefault("train" if split == "restval" else split, []).append((rel, captions_of(i, n)))
        images.append({"split": split, "filepath": folder, "filename": rel.split("/")[1],
                       "sentences": [{"raw": c} for c in captions_of(i, n)]})
    if form == "karpathy":
        (root / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": images}))
    else:
        write_blip(root, splits, "coco_karpathy_{}.json")
    return splits


def write_blip(root, splits, pattern: str) -> None:
    """Train: one row per caption; val/test: one row per image with its caption list."""
    train = [{"image": rel, "caption": c, "image_id": rel} for rel, caps in splits["train"] for c in caps]
    (root / pattern.format("train")).write_text(json.dumps(train))
    for split in ("val", "test"):
        rows = [{"image": rel, "caption": caps} for rel, caps in splits[split]]
        (root / pattern.format(split)).write_text(json.dumps(rows))


TREES = {"flickr30k": (Flickr30K, flickr_tree), "coco": (COCO, coco_tree)}


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("form", ["karpathy", "blip"])
def test_both_annotation_forms_read_the_same(tmp_path, name, form, caplog):
    source_cls, write = TREES[name]
    expected = write(tmp_path, form)
    ds = source_cls().load(tmp_path)
    assert list(ds.splits) == ["train", "val", "test"]  # COCO's restval joined train
    for split, rows in expected.items():
        assert ds.split(split).image_paths == [tmp_path / rel for rel, _ in rows]
        assert ds.split(split).captions == [[c.lower().rstrip(".!").replace(",", "") for c in caps] for _, caps in rows]
    assert ds.image_size is None and len(ds.fingerprint) == 16
    # The small tree is not the standard split: loading says so, per split, instead of assuming.
    warnings = caplog.text
    standard = source_cls.expected_images["train"]
    assert f"{name} train split has {len(expected['train'])} images, the Karpathy split has {standard}" in warnings


def test_karpathy_file_wins_over_blip_files(tmp_path):
    flickr_tree(tmp_path, "blip")
    flickr_tree(tmp_path, "karpathy", sizes=(("train", 3), ("val", 1), ("test", 1)))
    assert Flickr30K().load(tmp_path).split("train").num_images == 3


def test_annotation_errors_are_one_line(tmp_path):
    with pytest.raises(VLBenchError, match="needs its data: pass --data-root"):
        Flickr30K().load(None)
    with pytest.raises(VLBenchError, match=r"expected dataset_coco\.json \(Karpathy\) or coco_karpathy_train\.json"):
        COCO().load(tmp_path)
    flickr_tree(tmp_path, "blip")
    (tmp_path / "flickr30k_val.json").write_text(json.dumps({"image": "x.jpg"}))
    with pytest.raises(VLBenchError, match=r"flickr30k_val\.json is not a BLIP-style annotation file") as e:
        Flickr30K().load(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "flickr30k_val.json").unlink()
    with pytest.raises(VLBenchError, match=r"flickr30k_val\.json not found"):
        Flickr30K().load(tmp_path)


def test_missing_image_is_named(tmp_path):
    flickr_tree(tmp_path, "karpathy")
    (tmp_path / "flickr30k-images/1010.jpg").unlink()  # a test image
    with pytest.raises(VLBenchError, match=r"1010\.jpg.*is missing"):
        Flickr30K().load(tmp_path)


# ----------------------------------------------------------------------------- data check


def test_data_check_reports_counts_and_every_bad_image(tmp_path, capsys):
    coco_tree(tmp_path, "blip")
    corrupt = tmp_path / "val2014/COCO_val2014_000000000003.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    missing = tmp_path / "val2014/COCO_val2014_000000000005.jpg"
    missing.unlink()
    assert main(["data", "check", "coco", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "BLIP-style annotations (coco_karpathy_train.json, coco_karpathy_val.json, coco_karpathy_test.json)" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["train"], ["val"], ["test"])}
    assert lines["train"][:4] == ["train", "3", "113287", "15"]  # restval counted in train
    assert lines["test"][:4] == ["test", "2", "5000", "11"] and "5 to 6 (mean 5.50)" in out
    assert f"missing images: 1\n  {missing}" in out
    assert f"unreadable images: 1\n  cannot read image {corrupt}" in out
    assert "PROBLEMS: coco train split has 3 images, the Karpathy split has 113287" in out


def test_data_check_of_a_good_tree_needs_only_the_standard_sizes(tmp_path, capsys, monkeypatch):
    flickr_tree(tmp_path, "karpathy")
    monkeypatch.setattr(Flickr30K, "expected_images", {"train": 6, "val": 2, "test": 3})
    assert main(["data", "check", "flickr30k", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "missing images: none" in out and "unreadable images: none" in out
    assert out.rstrip().endswith("OK: every image is readable, split sizes match the standard split")


# ----------------------------------------------------------------------------- image banks


def test_image_bank_matches_the_float_path_and_is_cached(tmp_path, vlbench_cache):
    flickr_tree(tmp_path, "karpathy")
    ds = Flickr30K().load(tmp_path)
    paths = ds.split("train").image_paths
    bank = image_bank(ds, "train", 16, MEAN, STD)
    expected = load_images(paths, 16, MEAN, STD)
    assert bank.shape == expected.shape and len(bank) == 6 and bank.nbytes == expected.nbytes // 4
    idx = torch.tensor([4, 0, 4])
    assert torch.equal(bank[idx], expected[idx]) and torch.equal(bank[2], expected[2])
    assert torch.equal(torch.cat(list(bank.split(4))), expected) and torch.equal(bank.clone()[1:3], expected[1:3])
    paths[0].unlink()  # decoded once: the next run maps the cache and never opens the files
    assert torch.equal(image_bank(ds, "train", 16, MEAN, STD)[0], expected[0])
    assert sorted(p.name for p in (vlbench_cache / "images").iterdir() if p.suffix != ".lock") == [
        f"flickr30k-{ds.fingerprint}-train-16px.npy"]


def test_corrupt_test_image_is_named_never_dropped(tmp_path, vlbench_cache):
    flickr_tree(tmp_path, "karpathy")
    corrupt = tmp_path / "flickr30k-images/1009.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated download
    ds = Flickr30K().load(tmp_path)
    with pytest.raises(VLBenchError, match=f"cannot read image {corrupt}"):
        image_bank(ds, "test", 16, MEAN, STD)
    assert [p.name for p in (vlbench_cache / "images").iterdir()] == [f"flickr30k-{ds.fingerprint}-test-16px.lock"]  # no half-written cache


# ----------------------------------------------------------------------------- augmentation


def test_crop_and_flip():
    x = torch.randn(6, 3, 8, 8)
    assert torch.equal(random_resized_crop(x, torch.Generator().manual_seed(0), (1, 1), (1, 1), flip=False), x)
    flipped = random_resized_crop(x, torch.Generator().manual_seed(0), (1, 1), (1, 1), flip=True)
    mirrored = [torch.allclose(f, xi.flip(-1), atol=1e-6) for f, xi in zip(flipped, x)]
    kept = [torch.allclose(f, xi, atol=1e-6) for f, xi in zip(flipped, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    ramp = torch.linspace(0, 1, 64).expand(64, 3, 64, 64).clone()
    crops = random_resized_crop(ramp, torch.Generator().manual_seed(1), flip=False)
    span = crops[:, 0, 0, -1] - crops[:, 0, 0, 0]  # fraction of the width each crop kept
    assert span.min() > 0.55 and span.max() <= 1 and span.std() > 0.05
    again = random_resized_crop(ramp, torch.Generator().manual_seed(1), flip=False)
    assert torch.equal(crops, again)  # the trainer's seeded generator decides everything
    pixels = torch.randn(2, 3, 8, 8, requires_grad=True)
    random_resized_crop(pixels, torch.Generator().manual_seed(2)).sum().backward()
    assert pixels.grad.abs().sum() > 0  # differentiable: distillers can augment synthetic images


def test_only_flip_safe_sources_are_augmented():
    assert train_augment(Flickr30K.flip_safe) is random_resized_crop and train_augment(COCO.flip_safe) is not None
    assert train_augment(SynthScenes.flip_safe) is None
    assert Run(RunSpec(condenser="random", budget=1)).augment is None  # the embedded default keeps its fast path


# ----------------------------------------------------------------------------- end to end


def test_vlbench_run_on_a_flickr_tree(tmp_path, vlbench_cache, capsys):
    root = tmp_path / "flickr30k"
    flickr_tree(root, "blip")
    config = {
        "backbone": "nfnet-bert",
        "backbone_options": {"image_size": 32, "pretrained": None, "text_model": str(write_tiny_bert(tmp_path / "bert"))},
        "evals": 2,
        "protocol": {"steps": 3, "batch_size": 8},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    argv = ["run", "--condenser", "random", "--budget", "10", "--dataset", "flickr30k", "--data-root", str(root),
            "--config", str(tmp_path / "run.yaml"), "--results", str(tmp_path / "results")]
    assert main(argv) == 0
    assert "random @ 10 pairs on flickr30k/nfnet-bert: mean recall" in capsys.readouterr().out
    [record_file] = (tmp_path / "results" / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["budget"] == 10 and record["condensed"]["num_pairs"] == 10
    assert len(record["metrics"]["per_seed"]) == 2 and record["dataset"]["fingerprint"]
    assert record["spec"]["protocol"] == TrainProtocol(steps=3, batch_size=8).to_dict()
