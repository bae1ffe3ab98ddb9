"""A PNG grid of a condensed set: each image with the real training caption nearest to its text embedding."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vlbench.api import Pairs

CELL = 144  # pixels per image in the grid (tiny images are upscaled with nearest neighbours)
CAPTION_LINES = 4


def nearest_captions(text_features: Tensor, train: Pairs) -> list[str]:
    """The training caption whose frozen embedding has the highest cosine similarity to each row."""
    sims = F.normalize(text_features.float(), dim=1) @ F.normalize(train.text_features.float(), dim=1).t()
    return [train.captions[i] for i in sims.argmax(dim=1).tolist()]


def write_grid(images: Tensor, captions: list[str], normalization, output: Path, columns: int = 10) -> Path:
    from PIL import Image, ImageDraw

    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
    pixels = (images.float() * std + mean).clamp(0, 1)
    pixels = F.interpolate(pixels, size=(CELL, CELL), mode="nearest")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    line_height, chars = 12, CELL // 6
    cell_h = CELL + CAPTION_LINES * line_height + 6
    canvas = Image.new("RGB", (columns * CELL, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, caption) in enumerate(zip(pixels, captions)):
        x, y = (i % columns) * CELL, (i // columns) * cell_h
        array = (img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        canvas.paste(Image.fromarray(array), (x, y))
        for k, line in enumerate(textwrap.wrap(caption, chars)[:CAPTION_LINES]):
            draw.text((x + 2, y + CELL + 2 + k * line_height), line, fill="black")
    output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output)
    return output
