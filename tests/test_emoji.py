"""The emoji data set: built from Debian's emoji fonts and CLDR annotations, deterministically, split by group."""
import json
from pathlib import Path

import pytest

from vlbench.api import VLBenchError
from vlbench.data import read_karpathy
from vlbench.data.karpathy import clean_caption
from vlbench.plugins import registry
from vlbench_plugins import emoji, emoji_sources
from vlbench_plugins.emoji_sources import INSTALL, Renderers, Sources, cldr_annotations

try:
    SOURCES, MISSING = Sources.find(), ""
except VLBenchError as e:  # CI installs them (scripts/emoji-packages.sh)
    SOURCES, MISSING = None, str(e)
needs_packages = pytest.mark.skipif(SOURCES is None, reason=MISSING)
SMALL = 40  # items: the first ones in CLDR's order (faces), enough for every split


@pytest.fixture(scope="module")
def all_items():
    return emoji.items(SOURCES, Renderers(SOURCES))


def test_missing_packages_are_one_line_with_the_install_command(tmp_path, monkeypatch):
    with pytest.raises(VLBenchError) as e:
        Sources.find(tmp_path)
    message = str(e.value)
    assert "\n" not in message and INSTALL in message
    assert "fonts-noto-color-emoji, fonts-symbola, ruby-gemojione, unicode-cldr-core" in message
    # Loading looks for the packages before it announces a build, and leaves nothing behind.
    monkeypatch.setattr(emoji_sources, "PACKAGE_ROOT", tmp_path)
    with pytest.raises(VLBenchError, match="apt-get install"):
        emoji.EmojiGlyphs().load(tmp_path / "emoji")
    assert not (tmp_path / "emoji").exists()


@needs_packages
def test_build_is_deterministic_and_read_by_the_karpathy_reader(tmp_path, monkeypatch):
    emoji.build(tmp_path / "a", SOURCES, limit=SMALL)
    emoji.build(tmp_path / "b", SOURCES, limit=SMALL)
    first = emoji.EmojiGlyphs().load(tmp_path / "a")
    second = read_karpathy(tmp_path / "b" / emoji.ANNOTATIONS, tmp_path / "b" / "images", "emoji")
    assert first.fingerprint == second.fingerprint
    assert first.image_size == emoji.IMAGE_SIZE and set(first.splits) == {"train", "val", "test"}
    # The fingerprint covers the pixels (the annotation file carries a digest of every image): other pixels,
    # same file names and captions, another fingerprint.
    monkeypatch.setattr(emoji, "fit", lambda glyph, size: emoji_sources.fit(glyph, size).rotate(90))
    emoji.build(tmp_path / "c", SOURCES, limit=SMALL)
    assert emoji.EmojiGlyphs().load(tmp_path / "c").fingerprint != first.fingerprint
    # train has every drawing of an item, val and test one each, so no two test images share captions.
    test = first.splits["test"].captions
    assert len({tuple(c) for c in test}) == len(test)
    drawn = json.loads((tmp_path / "a" / emoji.ANNOTATIONS).read_text())["images"]
    assert {e["drawn_by"] for e in drawn if e["split"] == "train"} == {"noto", "emojione", "symbola"}


def test_registered_as_plugin():
    assert registry().get("dataset", "emoji") is emoji.EmojiGlyphs


@needs_packages
def test_splits_are_disjoint_by_group(all_items):
    split_of_group = {}
    for item in all_items:
        assert split_of_group.setdefault(item.group, item.split) == item.split, item.emoji
    # Skin-tone variants share their group: waving hand and its five tones sit in one split.
    waving = [item for item in all_items if item.emoji.startswith("\U0001F44B")]
    assert len(waving) == 6 and len({item.split for item in waving}) == 1
    per_split = {split: sum(item.split == split for item in all_items) for split, _ in emoji.SPLIT_SHARES}
    assert all(n > 100 for n in per_split.values()), per_split


@needs_packages
def test_captions_are_real_annotations(all_items):
    """At least three per item, distinct after cleaning, each an annotation text or a single CLDR keyword."""
    annotations = cldr_annotations(SOURCES)
    emojione = Renderers(SOURCES).emojione
    for item in all_items:
        found = annotations[item.emoji]
        texts = {t for locale in found.values() for t in (locale.get("tts"), locale.get("keywords"))} - {None}
        texts |= {t.replace(" | ", ", ") for t in texts} | set(found["en"]["keywords"].split(" | "))
        if item.emoji in emojione:
            entry = emojione[item.emoji]
            texts |= {entry["name"], ", ".join(entry["keywords"]), entry["shortname"].strip(":").replace("_", " ")}
        assert len(item.captions) >= emoji.MIN_CAPTIONS
        assert len({clean_caption(c) for c in item.captions}) == len(item.captions), item
        assert set(item.captions) <= texts, item
    assert len(all_items) > 3000


def test_the_install_script_installs_the_packages_the_error_names():
    script = (Path(__file__).parents[1] / "scripts" / "emoji-packages.sh").read_text()
    assert f"packages=({' '.join(emoji_sources.PACKAGES)})" in script


@needs_packages
def test_pretraining_on_the_held_out_groups(tmp_path, monkeypatch):
    """`pretrained: emoji` pretrains on pretrain.json's images only, into its own cached checkpoint."""
    import torch
    from safetensors.torch import load_file

    from vlbench_plugins import emoji_pretrain
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))
    emoji.build(emoji.default_root(), SOURCES, limit=SMALL)
    paths, captions = emoji.pretrain_pool()
    karpathy = json.loads((emoji.default_root() / emoji.ANNOTATIONS).read_text())["images"]
    assert paths and not {p.name for p in paths} & {e["filename"] for e in karpathy}
    assert all(len(c) >= emoji.MIN_CAPTIONS for c in captions)

    monkeypatch.setattr(emoji_pretrain, "STEPS_PER_EPOCH", 3)
    backbone = TinyViTMiniLM(pretrained="emoji", pretrain_epochs=1, depth=1)
    path = backbone.checkpoint_path()
    assert path.parent == tmp_path / "pretrained" and path.name.startswith("tinyvit-emoji-")
    assert TinyViTMiniLM(pretrain_epochs=1, depth=1).checkpoint_path().name != path.name
    with monkeypatch.context() as m:  # another build of the data set is another checkpoint
        m.setattr(emoji, "BUILDER_VERSION", "next")
        assert TinyViTMiniLM(pretrained="emoji", pretrain_epochs=1, depth=1).checkpoint_path() != path
    backbone.prepare()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = backbone.encoder().state_dict()
    trained = load_file(str(path))
    assert trained.keys() == fresh.keys() and not torch.equal(trained["blocks.0.attn.qkv.weight"],
                                                             fresh["blocks.0.attn.qkv.weight"])
