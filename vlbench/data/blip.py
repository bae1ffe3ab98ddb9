"""Reading BLIP-style per-split annotation files (``flickr30k_train.json``, ``coco_karpathy_test.json``).

Each file is a list of rows ``{"image": relative path, "caption": str or list of str}``: the train
files hold one row per caption, the val/test files one row per image with all its captions.
Both are grouped into one `Entry` per image, in order of first appearance.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from vlbench.api import VLBenchError
from vlbench.data.karpathy import Entry, read_json


def blip_entries(files: Mapping[str, Path]) -> list[Entry]:
    """The entries of BLIP-style files, given as {split: path}."""
    entries: list[Entry] = []
    for split, path in files.items():
        captions: dict[str, list[str]] = {}
        try:
            for row in read_json(path):
                caption = row["caption"]
                captions.setdefault(row["image"], []).extend([caption] if isinstance(caption, str) else caption)
        except (KeyError, TypeError) as e:
            raise VLBenchError(
                f"{path} is not a BLIP-style annotation file (bad or missing {e}): expected a list of "
                '{"image": ..., "caption": ...} rows'
            ) from None
        entries += [Entry(split, Path(image), caps) for image, caps in captions.items()]
    return entries
