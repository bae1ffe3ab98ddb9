"""The paper's train-time augmentation, on batches of normalised image tensors.

The test transform is the resize done when images are decoded (`vlbench.data.bank`); training
adds a random-resized crop (scale 0.5-1, aspect ratio 3/4-4/3) and a horizontal flip, the
geometric part of the official code's training transform (`expert_augment` adds its RandAugment,
for experts). Crop and flip are one `grid_sample` per batch: it runs on the batch's device, draws
from the trainer's seeded generator, and is differentiable, so a distiller can put its synthetic
images through the same augmentation.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vlbench.api import VLBenchError

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


# ----------------------------------------------------------------------------- the official experts' augmentation

#: The op list of the official code's `RandomAugment(2, 5, ...)` (its data/__init__.py; BLIP's
#: transform/randaugment.py): each image draws `num_ops` ops with replacement, applies each with
#: probability 1/2 at level 5 of 10, geometric ops with a random sign and grey (128) fill.
RANDAUGMENT_OPS = ("identity", "autocontrast", "brightness", "sharpness", "equalize",
                   "shear_x", "shear_y", "translate_x", "translate_y", "rotate")
EXPERT_AUGMENTATIONS = ("none", "crop_flip", "crop_flip_randaugment")
_FILL = 128 / 255


def rand_augment(images: Tensor, generator: torch.Generator, num_ops: int = 2, magnitude: int = 5,
                 max_level: int = 10) -> Tensor:
    """The official RandomAugment on a batch of [0, 1] images (N, 3, H, W), per image, from `generator`.

    Pixels are quantised to 8 bits as the official code's uint8 images are. At the official level
    (5 of 10) brightness and sharpness get factor 1.0, i.e. they are identities, exactly as there.
    """
    from torchvision.transforms.v2 import functional as TF

    n = len(images)
    out = _quantize(images.clamp(0, 1))
    level = magnitude / max_level
    for _ in range(num_ops):
        op = torch.randint(len(RANDAUGMENT_OPS), (n,), generator=generator)
        applied = torch.rand(n, generator=generator) <= 0.5
        sign = torch.where(torch.rand(n, generator=generator) > 0.5, -1.0, 1.0)
        for k, name in enumerate(RANDAUGMENT_OPS):
            idx = torch.nonzero(applied & (op == k)).flatten()
            if len(idx) == 0 or name == "identity":
                continue
            x = out[idx.to(out.device)]
            if name == "autocontrast":
                x = TF.autocontrast(x)
            elif name == "equalize":
                x = TF.equalize((x * 255).round().to(torch.uint8)).float() / 255
            elif name in ("brightness", "sharpness"):
                factor = level * 1.8 + 0.1
                x = TF.adjust_brightness(x, factor) if name == "brightness" else TF.adjust_sharpness(x, factor)
            else:
                x = _warp(x, _geometry(name, level, sign[idx], x.shape[-1], x.shape[-2]))
            out[idx.to(out.device)] = _quantize(x)
    return out


def _quantize(x: Tensor) -> Tensor:
    return (x * 255).round().clamp(0, 255) / 255


def _geometry(name: str, level: float, sign: Tensor, width: int, height: int) -> Tensor:
    """Forward affine maps (N, 3, 3) in pixel coordinates, as the official cv2.warpAffine calls use them."""
    m = torch.eye(3).repeat(len(sign), 1, 1)
    if name == "shear_x":
        m[:, 0, 1] = sign * level * 0.3
    elif name == "shear_y":
        m[:, 1, 0] = sign * level * 0.3
    elif name == "translate_x":
        m[:, 0, 2] = sign * level * 10  # pixels, whatever the image size
    elif name == "translate_y":
        m[:, 1, 2] = sign * level * 10
    else:  # rotate by level * 30 degrees about the image centre
        angle = torch.deg2rad(sign * level * 30)
        cos, sin, cx, cy = angle.cos(), angle.sin(), width / 2, height / 2
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, sin, (1 - cos) * cx - sin * cy
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = -sin, cos, sin * cx + (1 - cos) * cy
    return m


def _warp(images: Tensor, forward: Tensor) -> Tensor:
    """Warp by forward pixel-space maps with bilinear sampling and grey fill outside the image."""
    h, w = images.shape[-2:]
    # pixel index -> grid_sample's [-1, 1] coordinates (align_corners=False), and back
    to_grid = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    theta = (to_grid @ torch.linalg.inv(forward) @ torch.linalg.inv(to_grid))[:, :2]
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images - _FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + _FILL


def expert_augment(kind: str, normalization: tuple[tuple[float, ...], tuple[float, ...]] | None) -> Augment | None:
    """The experts' train transform on normalised batches: "none", "crop_flip" (the evaluation's), or
    "crop_flip_randaugment" (the official experts': crop + flip, then RandomAugment(2, 5) on the pixels)."""
    if kind not in EXPERT_AUGMENTATIONS:
        raise VLBenchError(f"expert augmentation must be one of {', '.join(EXPERT_AUGMENTATIONS)}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "crop_flip":
        return random_resized_crop
    if normalization is None:
        raise VLBenchError(f"expert augmentation {kind!r} needs the images' normalization (mean, std)")
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)

    def augment(images: Tensor, generator: torch.Generator) -> Tensor:
        m, s = mean.to(images), std.to(images)
        pixels = random_resized_crop(images, generator) * s + m
        return (rand_augment(pixels, generator) - m) / s

    return augment
