"""Decoding image files into normalised tensors, and back."""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vlbench.api import VLBenchError
from vlbench.progress import bar

_CHUNK = 256


def read_rgb(path: Path) -> Image.Image:
    """A fully decoded RGB image; a missing, truncated or corrupt file raises an error naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # forces the full decode, so truncated files fail here
    except (OSError, ValueError) as e:
        raise VLBenchError(f"cannot read image {path} ({e}): replace or re-download it") from None


def _read(path: Path, size: int) -> np.ndarray:
    im = read_rgb(path)
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im)


def decode_images(paths: Sequence[Path], size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode and resize to size x size (bicubic) into `out`: uint8 (N, size, size, 3), allocated if None."""
    if out is None:
        out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def fill(start: int) -> int:
        stop = min(start + _CHUNK, len(paths))
        for i in range(start, stop):
            out[i] = _read(paths[i], size)
        return stop - start

    # Threads pay off on photos (PIL releases the GIL while decoding); chunks keep the
    # per-task overhead negligible on tiny PNGs.
    with bar(len(paths), "loading images", "img") as loaded, \
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for n in pool.map(fill, range(0, len(paths), _CHUNK)):
            loaded.update(n)
    return out


def load_images(
    paths: Sequence[Path], size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Decode, resize to size x size (bicubic) and normalise: float32 (N, 3, size, size)."""
    out = decode_images(paths, size)
    return normalize(torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), mean, std)


def normalize(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (..., 3, H, W) pixels -> float32 normalised images."""
    images = pixels.float().div_(255)
    return images.sub_(_channels(mean, images)).div_(_channels(std, images))


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Back to [0, 1] pixels (clamped), e.g. to write distilled images as PNGs."""
    return (images * _channels(std, images) + _channels(mean, images)).clamp(0, 1)


def _channels(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)
