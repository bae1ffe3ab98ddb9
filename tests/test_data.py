import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlbench.api import VLBenchError
from vlbench.data import clean_caption, denormalize, load_images, read_karpathy
from vlbench.data import synthscenes as ss
from vlbench.data.karpathy import MAX_CAPTION_WORDS
from vlbench.plugins import registry

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def write_png(path, size=8, value=(10, 200, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), value).save(path)


def karpathy_tree(root):
    """A COCO-like tree: a filepath per image and a restval split."""
    images = [
        {"split": "train", "filepath": "train2014", "filename": "a.png", "sentences": [{"raw": "A Dog's ball."}]},
        {"split": "restval", "filepath": "val2014", "filename": "b.png", "sentences": [{"raw": "Two  cats!"}]},
        {"split": "val", "filepath": "val2014", "filename": "c.png", "sentences": [{"raw": "A tree"}]},
        {"split": "test", "filename": "d.png", "sentences": [{"raw": "Red car"}, {"raw": "A CAR, red."}]},
    ]
    for img in images:
        write_png(root / "images" / img.get("filepath", "") / img["filename"])
    annotations = root / "dataset_toy.json"
    annotations.write_text(json.dumps({"images": images, "dataset": "toy"}))
    return annotations, images


# ----------------------------------------------------------------------------- Karpathy reader


def test_clean_caption():
    text = "  A Dog's ball,\tnext to  the black-and-white CAT!! "
    assert clean_caption(text) == "a dogs ball next to the black and white cat"
    long = " ".join(f"w{i}" for i in range(40))
    assert clean_caption(long) == " ".join(f"w{i}" for i in range(30))
    assert clean_caption(long, max_words=None) == long


def test_read_karpathy(tmp_path):
    annotations, _ = karpathy_tree(tmp_path)
    ds = read_karpathy(annotations, tmp_path / "images", "toy")
    assert ds.name == "toy" and ds.root == tmp_path
    assert list(ds.splits) == ["train", "val", "test"]  # restval joined train
    train = ds.split("train")
    assert train.image_paths == [tmp_path / "images/train2014/a.png", tmp_path / "images/val2014/b.png"]
    assert train.captions == [["a dogs ball"], ["two cats"]]
    test = ds.split("test")
    assert test.image_paths == [tmp_path / "images/d.png"]
    assert test.pair_captions == ["red car", "a car red"] and test.num_pairs == 2
    assert len(ds.fingerprint) == 16
    with pytest.raises(VLBenchError, match="has no 'restval' split"):
        ds.split("restval")


def test_fingerprint_follows_annotations(tmp_path):
    annotations, images = karpathy_tree(tmp_path)
    first = read_karpathy(annotations, tmp_path / "images", "toy").fingerprint
    assert read_karpathy(annotations, tmp_path / "images", "toy").fingerprint == first
    images[0]["sentences"][0]["raw"] = "A dog's ball, again."
    annotations.write_text(json.dumps({"images": images, "dataset": "toy"}))
    assert read_karpathy(annotations, tmp_path / "images", "toy").fingerprint != first


def test_missing_image_is_named(tmp_path):
    annotations, _ = karpathy_tree(tmp_path)
    (tmp_path / "images/d.png").unlink()
    with pytest.raises(VLBenchError, match=r"d\.png.*missing") as e:
        read_karpathy(annotations, tmp_path / "images", "toy")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda a, i: a.write_text('{"images": [}'), r"dataset_toy\.json is not valid JSON"),
        (lambda a, i: a.write_text('{"pictures": []}'), r"dataset_toy\.json is not in Karpathy's split format"),
        (lambda a, i: a.unlink(), r"annotation file .*dataset_toy\.json not found"),
        (lambda a, i: i.rename(i.with_name("elsewhere")), r"image directory .*images not found"),
    ],
)
def test_unreadable_input_gives_one_line_error(tmp_path, breakage, message):
    annotations, _ = karpathy_tree(tmp_path)
    breakage(annotations, tmp_path / "images")
    with pytest.raises(VLBenchError, match=message) as e:
        read_karpathy(annotations, tmp_path / "images", "toy")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- images


def test_load_images_resizes_and_normalises(tmp_path):
    write_png(tmp_path / "a.png", size=8, value=(255, 0, 128))
    write_png(tmp_path / "b.png", size=20, value=(0, 255, 0))
    x = load_images([tmp_path / "a.png", tmp_path / "b.png"], 8, MEAN, STD)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32 and x.is_contiguous()
    expected = (torch.tensor([255, 0, 128]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(x[0, :, 3, 3], expected)
    pixels = denormalize(x, MEAN, STD)
    assert torch.allclose(pixels[1, :, 4, 4], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


@pytest.mark.parametrize("content", [b"not an image", None])
def test_corrupt_image_is_named(tmp_path, content):
    write_png(tmp_path / "good.png")
    write_png(tmp_path / "bad.png", size=64)
    bad = tmp_path / "bad.png"
    bad.write_bytes(content if content is not None else bad.read_bytes()[:60])  # None: truncated PNG
    with pytest.raises(VLBenchError, match=r"cannot read image .*bad\.png"):
        load_images([tmp_path / "good.png", bad], 8, MEAN, STD)


# ----------------------------------------------------------------------------- synthscenes

SMALL = dict(train=300, val=20, test=300, pretrain=300)  # enough single-object scenes to collide


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "set"
    ss.generate(root, **SMALL)
    return root


def scene_of(image):
    """Parse the 'Top left: large red circle. ...' caption back into the canonical scene key."""
    lookup = lambda table, names: {w: names.index(k) for k, ws in table.items() for w in ws}  # noqa: E731
    cells, sizes = lookup(ss._CELL_WORDS, list(ss.CELLS)), lookup(ss._SIZE_WORDS, list(ss.SIZES))
    colours, shapes = lookup(ss._COLOUR_WORDS, list(ss.COLOURS)), lookup(ss._SHAPE_WORDS, list(ss.SHAPES))
    (raw,) = [s["raw"] for s in image["sentences"] if s["raw"].endswith(".")]
    objects = []
    for part in raw.rstrip(".").split(". "):
        cell, rest = part.split(": ")
        size, colour, shape = rest.split(" ", 2)
        objects.append((cells[cell.lower()], colours[colour], shapes[shape], sizes[size]))
    return tuple(sorted(objects))


def test_generation_is_deterministic(tmp_path, small_set):
    ss.generate(tmp_path / "again", **SMALL)
    for name in (ss.ANNOTATIONS, ss.PRETRAIN_LABELS, "VERSION", "images/test_7.png", "images/pretrain_299.png"):
        assert (tmp_path / "again" / name).read_bytes() == (small_set / name).read_bytes(), name
    ss.generate(tmp_path / "other", seed=1, **SMALL)
    assert (tmp_path / "other" / ss.ANNOTATIONS).read_bytes() != (small_set / ss.ANNOTATIONS).read_bytes()


def test_layout_and_captions(small_set):
    data = json.loads((small_set / ss.ANNOTATIONS).read_text())
    by_split = {s: [i for i in data["images"] if i["split"] == s] for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in by_split.items()} == {s: SMALL[s] for s in by_split}
    with Image.open(small_set / "images" / by_split["test"][0]["filename"]) as im:
        assert im.size == (36, 36) and im.mode == "RGB"

    test_scenes = [scene_of(i) for i in by_split["test"]]
    assert len(set(test_scenes)) == len(test_scenes)
    assert any(len(s) == 1 for s in test_scenes) and any(len(s) == 3 for s in test_scenes)
    others = {scene_of(i) for s in ("train", "val") for i in by_split[s]}
    _, labels, _ = ss.load_pretrain_labels(small_set)
    others |= {tuple((c, *map(int, l)) for c, l in enumerate(scene) if l[0] >= 0) for scene in labels}
    assert not others & set(test_scenes)

    for image in data["images"]:
        texts = [clean_caption(s["raw"], max_words=None) for s in image["sentences"]]
        assert len(set(texts)) == 5
        assert max(len(t.split()) for t in texts) <= MAX_CAPTION_WORDS  # cleaning must not cut a caption
        for cell, colour, shape, size in scene_of(image):
            for words, key in [(ss._COLOUR_WORDS, list(ss.COLOURS)[colour]), (ss._SHAPE_WORDS, ss.SHAPES[shape]),
                               (ss._SIZE_WORDS, list(ss.SIZES)[size]), (ss._CELL_WORDS, ss.CELLS[cell])]:
                assert all(any(clean_caption(w) in t for w in words[key]) for t in texts), (key, texts)


def test_longest_scene_fits_caption_limit():
    # Three objects whose every synonym is two words long: the longest captions there are.
    hollow = ss.SHAPES.index("hollow square")
    scene = ((0, 0, hollow, 0), (2, 1, hollow, 1), (6, 2, hollow, 2))
    texts = ss.captions(scene, np.random.default_rng(0))
    assert max(len(clean_caption(t, max_words=None).split()) for t in texts) <= MAX_CAPTION_WORDS


def test_pretrain_labels(small_set):
    paths, labels, classes = ss.load_pretrain_labels(small_set)
    assert len(paths) == SMALL["pretrain"] and all(p.is_file() for p in paths[:5])
    assert labels.shape == (SMALL["pretrain"], 9, 3) and labels.dtype == torch.long
    occupied = labels[..., 0] >= 0
    assert ((labels >= 0) == occupied[..., None]).all()  # a cell is empty in all three attributes or none
    assert set(occupied.sum(1).tolist()) == {1, 2, 3}
    assert [len(classes[k]) for k in ("cell", "colour", "shape", "size")] == [9, 12, 8, 3]
    assert labels[..., 0].max() < 12 and labels[..., 1].max() < 8 and labels[..., 2].max() < 3


def test_round_trip_through_reader(small_set):
    ds = ss.SynthScenes().load(small_set)
    assert ds.name == "synthscenes" and ds.image_size == 36 and not ss.SynthScenes.flip_safe
    assert {s: v.num_images for s, v in ds.splits.items()} == {s: SMALL[s] for s in ("train", "val", "test")}
    assert ds.split("test").num_pairs == 5 * SMALL["test"]
    x = load_images(ds.split("val").image_paths, 36, MEAN, STD)
    assert x.shape == (SMALL["val"], 3, 36, 36)


def test_load_generates_once_into_cache(vlbench_cache, monkeypatch, caplog):
    caplog.set_level("INFO", "vlbench")
    monkeypatch.setattr(ss, "generate", functools.partial(ss.generate, train=4, val=2, test=3, pretrain=2))
    ds = ss.SynthScenes().load(None)
    assert ds.root == vlbench_cache / "data" / f"synthscenes-v{ss.GENERATOR_VERSION}"
    assert "generating" in caplog.text
    caplog.clear()
    assert ss.SynthScenes().load(None).fingerprint == ds.fingerprint
    assert "generating" not in caplog.text


def test_killed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = iter(range(10))

    def render(scene, rng):
        if next(calls) == 9:
            raise KeyboardInterrupt
        return np.zeros((36, 36, 3), np.uint8)

    monkeypatch.setattr(ss, "render", render)
    with pytest.raises(KeyboardInterrupt):
        ss.generate(tmp_path / "set", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_foreign_directory_is_refused_not_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VLBenchError, match="holds no synthscenes data set"):
        ss.SynthScenes().load(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_registered_as_plugin():
    assert "synthscenes" in registry().names("dataset")
    assert registry().get("dataset", "synthscenes") is ss.SynthScenes
