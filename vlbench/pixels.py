"""Canonical pixels: the backbone-independent space condensed images are stored in, and the way back.

A condenser returns images in its backbone's normalised input space (the plugin contract). The
harness stores them canonical: RGB on the [0, 1] scale at the resolution they were condensed at,
not clamped (a distiller's pixels may leave [0, 1]; clamping would change what evaluation trains
on: only the affine map changes). Any backbone trains on a canonical set through `for_backbone`:
a resize where its resolution differs, then its own normalisation.

Both maps do the arithmetic of `vlbench.data.images.normalize`, op for op, so a set read back by the
backbone that condensed it gives its pixels back within float rounding (bit for bit for real images
under mean = std = 0.5, the default backbone's; tests/test_pixels.py checks both).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: The name of the canonical space in a condensed set's manifest.
CANONICAL = "rgb01"
#: The space a condenser returns (and sets saved before canonical pixels hold): its backbone's normalised input.
BACKBONE = "backbone-normalised"

Normalization = tuple[Sequence[float], Sequence[float]]


def _channels(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def to_canonical(images: Tensor, normalization: Normalization) -> Tensor:
    """(N, 3, H, W) images normalised with (mean, std) -> the same images on the [0, 1] RGB scale (not clamped)."""
    mean, std = normalization
    return images * _channels(std, images) + _channels(mean, images)


def pixel_range(normalization: Normalization, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """(low, high), each (1, 3, 1, 1): where valid pixels lie in the space `normalization` ((mean, std) of a
    backbone) defines, the normalised image of RGB [0, 1]. Clamp a method's pixels into it; the runner
    refuses a set outside it (vlbench.validation)."""
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in normalization)
    return ((0 - mean) / std).to(device), ((1 - mean) / std).to(device)


def for_backbone(images: Tensor, size: int, normalization: Normalization) -> Tensor:
    """Canonical (N, 3, H, W) images -> a backbone's input: resized to size x size where they differ
    (bicubic with antialiasing, as PIL resizes real images when they are decoded), then normalised."""
    if tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    mean, std = normalization
    return (images - _channels(mean, images)) / _channels(std, images)
