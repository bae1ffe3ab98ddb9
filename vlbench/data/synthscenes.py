"""The embedded default data set: captioned synthetic scenes, generated offline and deterministically.

Each 36x36 image is a 3x3 grid of 12-px cells (aligned with the default backbone's 6-px ViT patches)
holding 1-3 objects in distinct cells. An object has a colour (12), a shape (8), a size (3) and a
cell; each of the five captions names every attribute of every object, worded differently, so the
caption set determines the scene. Test scenes are unique and appear in no other split, which keeps
R@1 attainable. A separate `pretrain` split, outside the Karpathy file, carries per-cell attribute
labels for pretraining the default image encoder.

The result is an ordinary Karpathy-format directory read by the same `read_karpathy` as
Flickr30K and COCO.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlbench.api import DatasetSource, ImageTextDataset, cache_dir
from vlbench.data.embedded import load_built
from vlbench.data.karpathy import read_json
from vlbench.storage import atomic_directory

GENERATOR_VERSION = "1"  # bump whenever the output changes
IMAGE_SIZE = 36
GRID = 3
CELL = IMAGE_SIZE // GRID
BACKGROUND = (24, 24, 24)  # dark gray, darker than every object colour
ANNOTATIONS = "dataset_synthscenes.json"
PRETRAIN_LABELS = "pretrain_labels.json"
#: Each split draws from its own seeded stream, so resizing one split does not shift the others.
_STREAM = {"test": 0, "val": 1, "train": 2, "pretrain": 3}

COLOURS = {
    "red": (230, 30, 30),
    "green": (30, 170, 40),
    "blue": (50, 90, 255),
    "yellow": (250, 230, 40),
    "orange": (255, 140, 0),
    "purple": (150, 50, 210),
    "pink": (255, 130, 200),
    "brown": (140, 75, 25),
    "cyan": (0, 220, 230),
    "white": (250, 250, 250),
    "gray": (135, 135, 135),
    "olive": (120, 130, 0),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "hollow square", "bar")
SIZES = {"small": 5, "medium": 8, "large": 11}  # bounding box side in pixels, all < CELL
CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")

# Caption vocabulary: a synonym is drawn per mention; the first one is the class name.
_COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"gray": ("gray", "grey")}
_SHAPE_WORDS = {s: (s,) for s in SHAPES} | {
    "cross": ("cross", "plus sign"),
    "hollow square": ("hollow square", "square outline"),
    "bar": ("bar", "horizontal bar"),
}
_SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium",), "large": ("large", "big")}
_CELL_WORDS = {
    "top left": ("top left", "upper left"),
    "top": ("top", "top middle"),
    "top right": ("top right", "upper right"),
    "left": ("left", "middle left"),
    "center": ("center", "middle"),
    "right": ("right", "middle right"),
    "bottom left": ("bottom left", "lower left"),
    "bottom": ("bottom", "bottom middle"),
    "bottom right": ("bottom right", "lower right"),
}
_PREPOSITION = {"left": "on", "right": "on", "middle left": "on", "middle right": "on", "top": "at", "bottom": "at"}
_NUMBERS = ("one", "two", "three")

Object = tuple[int, int, int, int]  # (cell, colour, shape, size) indices
Scene = tuple[Object, ...]  # sorted by cell: the canonical key of a scene


def default_root() -> Path:
    return cache_dir() / "data" / f"synthscenes-v{GENERATOR_VERSION}"


# ----------------------------------------------------------------------------- scenes and pixels


def _sample_scene(rng: np.random.Generator) -> Scene:
    cells = rng.choice(GRID * GRID, size=rng.integers(1, 4), replace=False)
    return tuple(
        sorted((int(c), int(rng.integers(len(COLOURS))), int(rng.integers(len(SHAPES))), int(rng.integers(len(SIZES))))
               for c in cells)
    )


def _sample_scenes(rng: np.random.Generator, n: int, exclude: set[Scene], unique: bool) -> list[Scene]:
    scenes: list[Scene] = []
    seen = set(exclude)
    while len(scenes) < n:
        scene = _sample_scene(rng)
        if scene in seen:
            continue
        if unique:
            seen.add(scene)
        scenes.append(scene)
    return scenes


def _mask(shape: str, s: int) -> np.ndarray:
    """Boolean s x s mask; u, v are pixel centres in [-1, 1]."""
    c = (np.arange(s) + 0.5) / s * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    r2 = u**2 + v**2
    edge = max(1, s // 4) / s * 2  # outline thickness, at least one pixel
    masks = {
        "circle": r2 <= 1.0,
        "square": np.ones((s, s), bool),
        "triangle": np.abs(u) <= (v + 1) / 2,  # apex up
        "diamond": np.abs(u) + np.abs(v) <= 1.0,
        "cross": np.minimum(np.abs(u), np.abs(v)) <= 1 / 3,
        "ring": (r2 <= 1.0) & (r2 >= (1 - edge) ** 2),
        "hollow square": np.maximum(np.abs(u), np.abs(v)) >= 1 - edge,
        "bar": np.abs(v) <= 1 / 3,
    }
    return masks[shape]


_MASKS = {(shape, size): _mask(name, px) for shape, name in enumerate(SHAPES) for size, px in enumerate(SIZES.values())}
_RGB = np.array(list(COLOURS.values()), dtype=np.uint8)


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(36, 36, 3) uint8; each object sits at a random offset inside its cell."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    for cell, colour, shape, size in scene:
        mask = _MASKS[shape, size]
        oy, ox = rng.integers(0, CELL - len(mask) + 1, size=2)
        y, x = cell // GRID * CELL + oy, cell % GRID * CELL + ox
        image[y:y + len(mask), x:x + len(mask)][mask] = _RGB[colour]
    return image


# ----------------------------------------------------------------------------- captions


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five captions, one per template, each naming every attribute of every object.

    Templates stay within the 30 words that caption cleaning keeps, even for three objects.
    """

    def words(obj: Object) -> tuple[str, str, str, str, str]:
        cell, colour, shape, size = obj
        pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
        where = pick(_CELL_WORDS[CELLS[cell]])
        return (pick(_SIZE_WORDS[list(SIZES)[size]]), pick(_COLOUR_WORDS[list(COLOURS)[colour]]),
                pick(_SHAPE_WORDS[SHAPES[shape]]), where, _PREPOSITION.get(where, "in"))

    def objects(order: str) -> list[tuple[str, str, str, str, str]]:
        objs = list(scene)  # reading order
        if order == "reverse":
            objs.reverse()
        elif order == "shuffled":
            objs = [objs[i] for i in rng.permutation(len(objs))]
        elif order == "largest first":
            objs.sort(key=lambda o: -o[3])
        return [words(o) for o in objs]

    count = f"{_NUMBERS[len(scene) - 1]} {'shape' if len(scene) == 1 else 'shapes'}"
    texts = [
        _join([f"{_a(size)} {colour} {shape} {prep} the {where}"
               for size, colour, shape, where, prep in objects("reading")]),
        " ".join(f"{where.capitalize()}: {size} {colour} {shape}."
                 for size, colour, shape, where, _ in objects("reading")),
        "there is " + _join([f"{_a(size)} {colour} {shape} {prep} the {where}"
                             for size, colour, shape, where, prep in objects("reverse")]),
        f"{count}: " + "; ".join(f"{_a(colour)} {shape}, {size}, {prep} the {where}"
                                 for size, colour, shape, where, prep in objects("shuffled")),
        _join([f"the {where} has {_a(size)} {colour} {shape}"
               for size, colour, shape, where, _ in objects("largest first")]),
    ]
    return [texts[i] for i in rng.permutation(len(texts))]  # no template owns a caption slot


# ----------------------------------------------------------------------------- files


def generate(root: Path, seed: int = 0, *, train: int = 8000, val: int = 500, test: int = 1000,
             pretrain: int = 10000) -> None:
    """Write images/<split>_<i>.png, the Karpathy file, pretrain labels and VERSION, atomically."""
    sizes = {"train": train, "val": val, "test": test, "pretrain": pretrain}
    rngs = {split: np.random.default_rng([seed, _STREAM[split]]) for split in sizes}
    scenes = {"test": _sample_scenes(rngs["test"], test, exclude=set(), unique=True)}
    for split in ("train", "val", "pretrain"):
        scenes[split] = _sample_scenes(rngs[split], sizes[split], exclude=set(scenes["test"]), unique=False)

    with atomic_directory(Path(root)) as tmp:
        (tmp / "images").mkdir()
        annotations, labels, pretrain_files = [], [], []
        for split in sizes:
            rng = rngs[split]
            for i, scene in enumerate(scenes[split]):
                filename = f"{split}_{i}.png"
                Image.fromarray(render(scene, rng)).save(tmp / "images" / filename, compress_level=1)
                if split == "pretrain":
                    pretrain_files.append(f"images/{filename}")
                    labels.append(_cell_labels(scene))
                else:
                    annotations.append({"split": split, "filename": filename, "imgid": len(annotations),
                                        "sentences": [{"raw": c} for c in captions(scene, rng)]})
        karpathy = {"dataset": "synthscenes", "generator_version": GENERATOR_VERSION, "seed": seed,
                    "images": annotations}
        (tmp / ANNOTATIONS).write_text(json.dumps(karpathy, separators=(",", ":")))
        classes = {"cell": list(CELLS), "colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}
        pretrain_json = {"classes": classes, "images": pretrain_files, "labels": labels}
        (tmp / PRETRAIN_LABELS).write_text(json.dumps(pretrain_json, separators=(",", ":")))
        (tmp / "VERSION").write_text(GENERATOR_VERSION + "\n")


def _cell_labels(scene: Scene) -> list[list[int]]:
    """Per cell [colour, shape, size] indices; -1 for an empty cell."""
    labels = [[-1, -1, -1] for _ in range(GRID * GRID)]
    for cell, colour, shape, size in scene:
        labels[cell] = [colour, shape, size]
    return labels


def load_pretrain_labels(root: Path) -> tuple[list[Path], torch.Tensor, dict[str, list[str]]]:
    """Pretrain image paths, labels (N, 9, 3) long [colour, shape, size] per cell (-1: empty), class names."""
    data = read_json(Path(root) / PRETRAIN_LABELS)
    return [Path(root) / f for f in data["images"]], torch.tensor(data["labels"], dtype=torch.long), data["classes"]


class SynthScenes(DatasetSource):
    """Captioned synthetic scenes, generated on first use (about 20k tiny PNGs)."""

    name = "synthscenes"
    flip_safe = False  # captions name left and right

    def load(self, data_root: Path | None) -> ImageTextDataset:
        root = Path(data_root) if data_root is not None else default_root()
        return load_built(self.name, root, GENERATOR_VERSION, generate, ANNOTATIONS, IMAGE_SIZE, verb="generating")
