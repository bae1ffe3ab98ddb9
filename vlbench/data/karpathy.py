"""Reading captioned image collections in Karpathy's split format.

`read_karpathy` parses the single-file format (``dataset_flickr30k.json``, ``dataset_coco.json``);
`build_dataset` turns any list of `Entry` into an `ImageTextDataset`, so another annotation
format only has to produce entries.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlbench.api import ImageTextDataset, Split, VLBenchError

MAX_CAPTION_WORDS = 30  # the paper's caption preprocessing
#: Karpathy's "restval" images (COCO) are training images held out of val by chance.
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}

_APOSTROPHES = re.compile(r"['\u2019]")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


_OFFICIAL_PUNCTUATION = re.compile(r'[.!"()*#:;~]')
_WHITESPACE_RUNS = re.compile(r"\s{2,}")


def clean_caption(text: str, max_words: int | None = MAX_CAPTION_WORDS) -> str:
    """Lower case, punctuation stripped, whitespace collapsed, at most `max_words` words."""
    text = _APOSTROPHES.sub("", text.lower())  # "dog's" -> "dogs", not "dog s"
    words = _PUNCTUATION.sub(" ", text).split()
    return " ".join(words[:max_words])


def official_caption(text: str, max_words: int = MAX_CAPTION_WORDS) -> str:
    """The official code's `pre_caption` (its data/flickr30k_dataset.py and coco_dataset.py, called with
    30 words): lower case, only `.!"()*#:;~` become spaces, runs of two or more whitespace characters
    become one space, spaces trimmed, at most `max_words` space-separated words. Commas, apostrophes,
    hyphens and a lone tab or newline inside the caption are kept."""
    text = _WHITESPACE_RUNS.sub(" ", _OFFICIAL_PUNCTUATION.sub(" ", text.lower()))
    return " ".join(text.rstrip("\n").strip(" ").split(" ")[:max_words])


#: `caption_cleaning` choices of the photo data sets: vlbench's (the default) or the official code's.
CAPTION_CLEANING: dict[str, Callable[[str], str]] = {"vlbench": clean_caption, "official": official_caption}


@dataclass(frozen=True)
class Entry:
    """One annotated image: its split, its path relative to the image directory, its captions."""

    split: str
    image: Path
    captions: Sequence[str]


def build_dataset(
    name: str, entries: Iterable[Entry], image_dir: Path, annotation_files: Sequence[Path], root: Path | None = None,
    require_images: bool = True, cleaning: str = "vlbench",
) -> ImageTextDataset:
    """Group entries into splits (in order), clean captions, check every image exists, fingerprint.

    The fingerprint hashes the annotation files' bytes, the sorted relative image list and (when not
    vlbench's) the caption cleaning, so that cached caption features never mix cleanings.
    `require_images=False` skips the existence check (for `vlbench data check`, which lists them all).
    """
    if cleaning not in CAPTION_CLEANING:
        raise VLBenchError(f"caption_cleaning must be one of {', '.join(CAPTION_CLEANING)}, got {cleaning!r}")
    clean = CAPTION_CLEANING[cleaning]
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise VLBenchError(f"image directory {image_dir} not found: download the images there or set the data root")
    paths: dict[str, list[Path]] = {}
    captions: dict[str, list[list[str]]] = {}
    missing: list[Path] = []
    for entry in entries:
        path = image_dir / entry.image
        if require_images and not path.is_file():
            missing.append(path)
        cleaned = [c for c in map(clean, entry.captions) if c]
        if not cleaned:
            raise VLBenchError(f"image {entry.image} has no captions in {', '.join(map(str, annotation_files))}")
        paths.setdefault(entry.split, []).append(path)
        captions.setdefault(entry.split, []).append(cleaned)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise VLBenchError(
            f"image {missing[0]}{more} listed in the annotations is missing: download the full image set"
        )
    return ImageTextDataset(
        name=name,
        root=Path(root) if root is not None else image_dir,
        splits={s: Split(s, paths[s], captions[s]) for s in paths},
        fingerprint=_fingerprint(annotation_files, image_dir, [p for ps in paths.values() for p in ps], cleaning),
    )


def _fingerprint(annotation_files: Sequence[Path], image_dir: Path, images: Iterable[Path], cleaning: str) -> str:
    h = hashlib.sha256()
    for f in annotation_files:
        h.update(Path(f).read_bytes())
    for rel in sorted(p.relative_to(image_dir).as_posix() for p in images):
        h.update(rel.encode() + b"\n")
    if cleaning != "vlbench":  # vlbench's cleaning keeps the fingerprints data sets had before the option
        h.update(f"caption_cleaning={cleaning}".encode())
    return h.hexdigest()[:16]


def read_json(path: Path) -> object:
    """Parse an annotation file, with one-line errors that name it."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise VLBenchError(f"annotation file {path} not found: download it there or set the data root") from None
    except json.JSONDecodeError as e:
        raise VLBenchError(
            f"annotation file {path} is not valid JSON ({e.msg}, line {e.lineno}): download it again"
        ) from None
    except OSError as e:
        raise VLBenchError(f"cannot read annotation file {path}: {e.strerror}") from None


def karpathy_entries(annotation_file: Path, data: object) -> list[Entry]:
    """The entries of a parsed Karpathy split file."""
    try:
        return [
            Entry(
                KARPATHY_SPLITS[img["split"]],
                Path(img.get("filepath", "")) / img["filename"],
                [s["raw"] for s in img["sentences"]],
            )
            for img in data["images"]
        ]
    except (KeyError, TypeError) as e:
        raise VLBenchError(
            f"{annotation_file} is not in Karpathy's split format (bad or missing {e}): use dataset_<name>.json "
            "from Karpathy's splits"
        ) from None


def read_karpathy(annotation_file: Path, image_dir: Path, name: str) -> ImageTextDataset:
    """Load a data set from Karpathy's single-file format; images are image_dir/filepath/filename."""
    annotation_file = Path(annotation_file)
    entries = karpathy_entries(annotation_file, read_json(annotation_file))
    return build_dataset(name, entries, image_dir, [annotation_file], root=annotation_file.parent)
