"""The paper's train-time augmentation, on batches of normalised image tensors.

The test transform is the resize done when images are decoded (`vlbench.data.bank`); training
adds a random-resized crop (scale 0.5-1, aspect ratio 3/4-4/3) and a horizontal flip, as in the
official code (minus its RandAugment). Both are one `grid_sample` per batch: it runs on the
batch's device, draws from the trainer's seeded generator, and is differentiable, so a
distiller can put its synthetic images through the same augmentation.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator], Tensor]


def random_resized_crop(
    images: Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True,
) -> Tensor:
    """Crop a random box of each image (area fraction in `scale`) back to full size; mirror half if `flip`."""
    n = len(images)
    u = torch.rand(n, 5, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    # Box sides as fractions of the image side. torchvision redraws boxes that do not fit; clamping
    # instead only trims the rare too-wide or too-tall box at scales near 1.
    width = (area * aspect).sqrt().clamp(max=1)
    height = (area / aspect).sqrt().clamp(max=1)
    mirror = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * mirror
    theta[:, 1, 1] = height
    theta[:, 0, 2] = (1 - width) * (2 * u[:, 2] - 1)  # box centre, in grid_sample's [-1, 1] coordinates
    theta[:, 1, 2] = (1 - height) * (2 * u[:, 3] - 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_augment(flip_safe: bool) -> Augment | None:
    """The train transform for a data set: crop + flip for photos (flip-safe sources), none otherwise.

    Sources whose captions name positions (synthscenes: "on the left") are not flip-safe, and a
    crop would cut away objects their captions name: they train on the test transform.
    """
    return random_resized_crop if flip_safe else None
