"""Reading captioned image collections in Karpathy's split format.

`read_karpathy` parses the single-file format (``dataset_flickr30k.json``, ``dataset_coco.json``);
`build_dataset` turns any list of `Entry` into an `ImageTextDataset`, so another annotation
format only has to produce entries.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlbench.api import ImageTextDataset, Split, VLBenchError

MAX_CAPTION_WORDS = 30  # the paper's caption preprocessing
#: Karpathy's "restval" images (COCO) are training images held out of val by chance.
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}

_APOSTROPHES = re.compile(r"['\u2019]")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def clean_caption(text: str, max_words: int | None = MAX_CAPTION_WORDS) -> str:
    """Lower case, punctuation stripped, whitespace collapsed, at most `max_words` words."""
    text = _APOSTROPHES.sub("", text.lower())  # "dog's" -> "dogs", not "dog s"
    words = _PUNCTUATION.sub(" ", text).split()
    return " ".join(words[:max_words])


@dataclass(frozen=True)
class Entry:
    """One annotated image: its split, its path relative to the image directory, its captions."""

    split: str
    image: Path
    captions: Sequence[str]


def build_dataset(
    name: str, entries: Iterable[Entry], image_dir: Path, annotation_files: Sequence[Path], root: Path | None = None,
    require_images: bool = True,
) -> ImageTextDataset:
    """Group entries into splits (in order), clean captions, check every image exists, fingerprint.

    The fingerprint hashes the annotation files' bytes and the sorted relative image list.
    `require_images=False` skips the existence check (for `vlbench data check`, which lists them all).
    """
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
        cleaned = [c for c in map(clean_caption, entry.captions) if c]
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
        fingerprint=_fingerprint(annotation_files, image_dir, [p for ps in paths.values() for p in ps]),
    )


def _fingerprint(annotation_files: Sequence[Path], image_dir: Path, images: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for f in annotation_files:
        h.update(Path(f).read_bytes())
    for rel in sorted(p.relative_to(image_dir).as_posix() for p in images):
        h.update(rel.encode() + b"\n")
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
