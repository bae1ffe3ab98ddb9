"""Loading a data set that vlbench builds itself (synthscenes, emoji): built on first use, then read
back by the same `read_karpathy` as Flickr30K and COCO."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from vlbench.api import ImageTextDataset, VLBenchError
from vlbench.data.karpathy import read_karpathy

log = logging.getLogger(__name__)


def load_built(name: str, root: Path, version: str, build: Callable[[Path], None], annotations: str,
               image_size: int, verb: str = "building") -> ImageTextDataset:
    """Build into `root` if absent (`build` writes a VERSION file), refuse a foreign directory or another
    builder's version, read the Karpathy file `annotations` with images in root/images."""
    if not root.exists():
        log.info(f"{verb} the {name} data set in {root}")
        build(root)
    version_file = root / "VERSION"
    if not version_file.is_file():
        raise VLBenchError(f"{root} holds no {name} data set (no VERSION file): point the data root at a new directory")
    found = version_file.read_text().strip()
    if found != version:
        raise VLBenchError(f"{root} was made by {name} builder v{found}, this is v{version}: delete it to rebuild")
    dataset = read_karpathy(root / annotations, root / "images", name)
    return dataclasses.replace(dataset, image_size=image_size)
