"""First-party plugin: the `emoji` data set, real drawings with real human-written text.

Each item is one emoji (a code point or a sequence: flags, keycaps, skin tones, ZWJ families)
that Unicode CLDR annotates in English and Noto Color Emoji draws. Its images are its drawings in
three emoji sets (Noto Color Emoji, EmojiOne 2.2, Symbola: plugins/emoji_sources.py), 36 px; its
captions are every distinct English annotation people wrote for it: CLDR's name and keyword list,
the regional English variants where they differ, EmojiOne's name, keywords and short name; an
item with fewer than five such texts is filled up to five with its single CLDR keywords (each a
search term a person attached to it). Items with fewer than three captions are left out.

Splits are by *group*: an emoji with its skin-tone variants removed, so that a test emoji's
recoloured twins are never trained on. A group's split is fixed by a hash of the group, so a
package that adds emoji moves no old one between splits. train holds every drawing of its items;
val and test one drawing per item (which set, by a hash of the item), so no two test images share
their captions. A `pretrain` share of groups is held out of all three and written beside them
(pretrain.json) for pretraining an image encoder on this domain.

Built once, deterministically, into $VLBENCH_CACHE in Karpathy's format and read by the same
`read_karpathy` as Flickr30K and COCO.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import PIL

from vlbench.api import DatasetSource, ImageTextDataset, cache_dir
from vlbench.data.embedded import load_built
from vlbench.data.karpathy import clean_caption, read_json
from vlbench.storage import atomic_directory
from vlbench_plugins.emoji_sources import LOCALES, Renderers, Sources, cldr_annotations, fit

BUILDER_VERSION = "1"  # bump whenever the output changes
IMAGE_SIZE = 36  # the embedded backbones' input: 3 x 3 patches of 12 px
ANNOTATIONS = "dataset_emoji.json"
PRETRAIN = "pretrain.json"
MIN_CAPTIONS = 3
FILL_TO = 5
SKIN_TONES = frozenset(map(chr, range(0x1F3FB, 0x1F400)))
#: Share of groups per split (cumulative on the group's hash): about 1000 test images.
SPLIT_SHARES = (("test", 0.26), ("val", 0.12), ("pretrain", 0.12), ("train", 0.50))


@dataclass(frozen=True)
class Item:
    emoji: str
    captions: tuple[str, ...]

    @property
    def group(self) -> str:
        """The emoji without skin tones (a lone skin-tone swatch is its own group)."""
        return "".join(c for c in self.emoji if c not in SKIN_TONES) or self.emoji

    @property
    def split(self) -> str:
        u = _unit(self.group)
        for split, share in SPLIT_SHARES:
            if u < share:
                return split
            u -= share
        return SPLIT_SHARES[-1][0]

    @property
    def stem(self) -> str:
        return "-".join(f"{ord(c):x}" for c in self.emoji)


def _unit(text: str) -> float:
    """A fixed pseudo-random number in [0, 1) for a string."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def captions(annotations: dict[str, dict[str, str]], emojione: dict | None) -> list[str]:
    """Every distinct annotation text (distinct after caption cleaning), filled up to FILL_TO with single keywords."""
    texts = []
    for locale in LOCALES:
        entry = annotations.get(locale, {})
        texts += [entry.get("tts"), entry.get("keywords", "").replace(" | ", ", ")]
    if emojione is not None:
        texts += [emojione["name"], ", ".join(emojione["keywords"]), emojione["shortname"].strip(":").replace("_", " ")]
    out: dict[str, str] = {}  # cleaned -> raw
    for text in filter(None, texts):
        out.setdefault(clean_caption(text), text)
    for keyword in annotations.get("en", {}).get("keywords", "").split(" | "):
        if len(out) >= FILL_TO:
            break
        out.setdefault(clean_caption(keyword), keyword)
    out.pop("", None)  # a text of punctuation only
    return list(out.values())


def items(sources: Sources, renderers: Renderers, limit: int | None = None) -> list[Item]:
    """Every CLDR-annotated emoji with a name that Noto draws and that has MIN_CAPTIONS captions, in CLDR's order
    (the first `limit` of them)."""
    found = []
    for emoji, annotations in cldr_annotations(sources).items():
        if len(found) == limit:
            break
        if "tts" not in annotations.get("en", {}) or renderers.noto(emoji) is None:
            continue
        texts = captions(annotations, renderers.emojione.get(emoji))
        if len(texts) >= MIN_CAPTIONS:
            found.append(Item(emoji, tuple(texts)))
    return found


def build(root: Path, sources: Sources, limit: int | None = None) -> None:
    """Write images/, the Karpathy file, pretrain.json and VERSION, atomically; `limit`: the first items only."""
    renderers = Renderers(sources)
    chosen = items(sources, renderers, limit)
    draw = renderers.all()
    with atomic_directory(Path(root)) as tmp:
        (tmp / "images").mkdir()
        images, pretrain = [], []
        for item in chosen:
            drawings = {name: glyph for name, render in draw.items() if (glyph := render(item.emoji)) is not None}
            if item.split in ("val", "test"):  # one drawing per item: no two test images share captions
                names = list(drawings)
                keep = names[int(_unit(f"drawing {item.emoji}") * len(names))]  # salted: not the split's hash
                drawings = {keep: drawings[keep]}
            for name, glyph in drawings.items():
                filename = f"{item.stem}_{name}.png"
                fit(glyph, IMAGE_SIZE).save(tmp / "images" / filename, optimize=False, compress_level=6)
                entry = {"split": item.split, "filename": filename, "emoji": item.emoji, "drawn_by": name,
                         "sentences": [{"raw": c} for c in item.captions]}
                (pretrain if item.split == "pretrain" else images).append(entry)
        for i, entry in enumerate(images):
            entry["imgid"] = i
        provenance = {"builder_version": BUILDER_VERSION, "pillow": PIL.__version__, "sources": sources.digests(),
                      "images_sha256": _digest(tmp / "images")}
        (tmp / ANNOTATIONS).write_text(json.dumps({"dataset": "emoji", **provenance, "images": images},
                                                  ensure_ascii=False, separators=(",", ":")))
        (tmp / PRETRAIN).write_text(json.dumps({"images": pretrain}, ensure_ascii=False, separators=(",", ":")))
        (tmp / "VERSION").write_text(BUILDER_VERSION + "\n")


def _digest(image_dir: Path) -> str:
    """One hash over every image's name and bytes: the pixels are part of the data fingerprint."""
    h = hashlib.sha256()
    for path in sorted(image_dir.iterdir()):
        h.update(path.name.encode() + b"\n" + path.read_bytes())
    return h.hexdigest()


def pretrain_pool() -> tuple[list[Path], list[list[str]]]:
    """The held-out `pretrain` groups of the default build: image paths and cleaned captions (built if absent)."""
    root = EmojiGlyphs().load(None).root
    entries = read_json(root / PRETRAIN)["images"]
    return ([root / "images" / e["filename"] for e in entries],
            [[clean_caption(s["raw"]) for s in e["sentences"]] for e in entries])


def default_root() -> Path:
    return cache_dir() / "data" / f"emoji-v{BUILDER_VERSION}"


class EmojiGlyphs(DatasetSource):
    """Emoji drawn by three emoji sets, captioned with CLDR's and EmojiOne's English annotations; built on first use."""

    name = "emoji"
    flip_safe = False  # "right arrow", "left-facing fist"

    def load(self, data_root: Path | None) -> ImageTextDataset:
        root = Path(data_root) if data_root is not None else default_root()
        # The packages are looked for before the "building" line, so that a missing one is the only line shown.
        sources = None if root.exists() else Sources.find()
        return load_built(self.name, root, BUILDER_VERSION, lambda target: build(target, sources), ANNOTATIONS,
                          IMAGE_SIZE)
