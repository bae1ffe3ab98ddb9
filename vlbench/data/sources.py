"""Photo collections with Karpathy splits, read from a data root in either annotation form.

A `KarpathySource` names its files; the root holds the images and, directly in it, either
Karpathy's single file (``dataset_flickr30k.json``) or the BLIP-style per-split files
(``flickr30k_train.json``, ...). When both are there, Karpathy's file wins. The exact layouts
are in docs/data.md.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from vlbench.api import DatasetSource, ImageTextDataset, VLBenchError, option
from vlbench.data.blip import blip_entries
from vlbench.data.karpathy import Entry, build_dataset, karpathy_entries, read_json

DOCS = "docs/data.md"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Annotations:
    """What a data root's annotation files say, before any image is looked at."""

    form: str  # "Karpathy" or "BLIP-style"
    files: list[Path]
    image_dir: Path  # annotation image paths are relative to it
    entries: list[Entry]

    def build(self, name: str, root: Path, require_images: bool = True, cleaning: str = "vlbench") -> ImageTextDataset:
        return build_dataset(name, self.entries, self.image_dir, self.files, root=root, require_images=require_images,
                             cleaning=cleaning)


@dataclass
class KarpathyConfig:
    caption_cleaning: str = option("vlbench", "vlbench (all punctuation stripped) or official (the official "
                                              "code's pre_caption)")


class KarpathySource(DatasetSource):
    """A photo collection whose data root holds its images and Karpathy-split annotations."""

    karpathy_file: ClassVar[str]  # Karpathy's single file, e.g. dataset_flickr30k.json
    karpathy_image_dir: ClassVar[str]  # where its (filepath/)filename paths start, under the root
    blip_files: ClassVar[dict[str, str]]  # split -> BLIP-style file; their image paths start at the root
    expected_images: ClassVar[dict[str, int]]  # images per split of the standard Karpathy split
    Config = KarpathyConfig

    def annotations(self, data_root: Path | None) -> Annotations:
        root = self._root(data_root)
        karpathy = root / self.karpathy_file
        if karpathy.is_file():
            return Annotations("Karpathy", [karpathy], root / self.karpathy_image_dir,
                               karpathy_entries(karpathy, read_json(karpathy)))
        blip = {split: root / name for split, name in self.blip_files.items()}
        if not any(path.is_file() for path in blip.values()):
            raise VLBenchError(
                f"no {self.name} annotations in {root}: expected {self.karpathy_file} (Karpathy) or "
                f"{', '.join(self.blip_files.values())} (BLIP-style); see {DOCS}"
            )
        return Annotations("BLIP-style", list(blip.values()), root, blip_entries(blip))

    def load(self, data_root: Path | None) -> ImageTextDataset:
        root = self._root(data_root)
        dataset = self.annotations(root).build(self.name, root, cleaning=self.config.caption_cleaning)
        for problem in size_mismatches(dataset, self.expected_images):
            log.warning(f"{problem}: results are not comparable to published ones "
                        f"(`vlbench data check {self.name}` lists what is wrong)")
        return dataset

    def _root(self, data_root: Path | None) -> Path:
        if data_root is None:
            raise VLBenchError(f"{self.name} needs its data: pass --data-root DIR (or data_root in the config); see {DOCS}")
        return Path(data_root).expanduser()


def size_mismatches(dataset: ImageTextDataset, expected: dict[str, int]) -> list[str]:
    """One line per split whose image count differs from the standard split's."""
    problems = []
    for split, n in expected.items():
        found = dataset.splits[split].num_images if split in dataset.splits else 0
        if found != n:
            problems.append(f"{dataset.name} {split} split has {found} images, the Karpathy split has {n}")
    return problems
