"""Photo collections as uint8 image banks: decoded once into the cache, memory-mapped, normalised on use.

Flickr30K's 29000 training images at 224 px take 4.4 GB as uint8 but 17 GB as float32, and
decoding them takes minutes; so a split is decoded once per (data set fingerprint, split, size)
into ``VLBENCH_CACHE/images`` and every later run maps that file. An `ImageBank` stands in for
the float tensor in `Pairs.images`: indexing it returns normalised float32 images, exactly what
the embedded data set's tensor would hold.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vlbench.api import ImageTextDataset
from vlbench.artifacts import artifact_path, cached
from vlbench.data.images import decode_images, normalize

log = logging.getLogger(__name__)


class ImageBank:
    """uint8 (N, H, W, 3) pixels that index like a float32 (N, 3, H, W) tensor of normalised images."""

    def __init__(self, pixels: Tensor, mean: Sequence[float], std: Sequence[float]):
        self.pixels, self.mean, self.std = pixels, tuple(mean), tuple(std)

    def __getitem__(self, index) -> Tensor:
        return normalize(self.pixels[index].movedim(-1, -3), self.mean, self.std)

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> torch.Size:
        n, h, w, c = self.pixels.shape
        return torch.Size((n, c, h, w))

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes

    def split(self, size: int) -> Iterator[Tensor]:
        """Normalised chunks of `size` images, like Tensor.split."""
        for start in range(0, len(self), size):
            yield self[start:start + size]

    def clone(self) -> "ImageBank":
        return ImageBank(self.pixels.clone(), self.mean, self.std)


def stored_pixels(images: "Tensor | ImageBank") -> Tensor:
    """What holds the images' content: a bank's uint8 pixels (hashing them is exact and 4x cheaper), else the tensor."""
    return images.pixels if isinstance(images, ImageBank) else images


def image_bank(dataset: ImageTextDataset, split: str, size: int, mean: Sequence[float], std: Sequence[float]) -> ImageBank:
    """The split's images resized to size x size, decoded on first use and cached (a corrupt file names itself)."""
    name = f"{dataset.name}-{dataset.fingerprint}-{split}-{size}px.npy"

    def decode(paths: list, tmp: Path) -> None:
        log.info(f"decoding {len(paths)} {split} images at {size} px (once; cached in {tmp.parent})")
        # Decode straight into the file: COCO's train split never has to fit in memory twice.
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        decode_images(paths, size, out=out)
        out.flush()
        del out

    # What is built is the file itself, so the bank is mapped from it whether it was built now or before.
    cached("images", name, lambda: dataset.split(split).image_paths, lambda path: None, decode)
    # Copy-on-write mapping: pages load on demand and are shared between processes.
    return ImageBank(torch.from_numpy(np.load(artifact_path("images", name), mmap_mode="c")), mean, std)
