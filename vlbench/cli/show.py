"""`vlbench show`: a PNG of a condensed set, each image with its full caption, titled with what made it.

A coreset's pairs carry their own training captions (`source_indices`); a learned text feature
is shown with the training caption nearest to it (the backbone's text encoder gives the training
captions' features). The images are drawn from the set's canonical pixels as they are stored: no
backbone is needed for them, except for a set saved before canonical pixels (format 1), which
is in its condensing backbone's space. Given a run record, the picture is written
next to the record (RESULTS/records/<run id>.png) and titled with its condenser, budget, backbone
and record id; given a condensed-set directory, into the working directory. Never into the cache.

cli.py wires it in with `add_show_command(subparsers)`.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from vlbench.core import RunSpec, VLBenchError, cache_dir, resolve_spec
from vlbench.board.records import read_record

CELL = 144  # pixels per image (tiny images are upscaled with nearest neighbours)
GAP = 12  # between cells, and around the grid
FONT_SIZE, TITLE_SIZE = 11, 15
LINE = FONT_SIZE + 3


def add_show_command(subparsers: argparse._SubParsersAction) -> None:
    show = subparsers.add_parser("show", help="write a PNG grid of a condensed set: its images with their full captions")
    show.add_argument("path", help="a run record (RESULTS/records/<run id>.json) or a condensed-set directory")
    show.add_argument("--output", help="PNG to write (default: next to the record, <run id>.png; "
                                       "for a set directory: ./<its name>.png)")
    show.add_argument("--dataset", help="data set whose training captions to use (default: the record's, else synthscenes)")
    show.add_argument("--data-root", help="directory holding the data set's images and annotations (default: the record's)")
    show.add_argument("--backbone", help="backbone the set was condensed on, whose text encoder finds the nearest captions "
                                         "(default: the record's, else tinyvit-minilm)")
    show.add_argument("--max-images", type=int, default=100, help="show at most this many pairs (default: 100)")
    show.add_argument("--columns", type=int, default=10, help="images per row (default: 10)")
    show.set_defaults(func=cmd_show)


# ----------------------------------------------------------------------------- what to show


def _read_record(path: Path) -> dict[str, Any]:
    return dict(read_record(path, ("condensed",)))


def condensed_dir(record: dict[str, Any]) -> Path:
    """Where the record's condensed set is in this machine's cache."""
    stored = record["condensed"].get("path")
    if not stored:
        raise VLBenchError(f"run {record['run_id']} has no condensed set ({record['condenser']['name']} trains on all pairs)")
    if stored.startswith("$VLBENCH_CACHE/"):
        return cache_dir() / stored.removeprefix("$VLBENCH_CACHE/")
    path = Path(stored)  # older records: an absolute path, perhaps from another machine
    return path if path.is_dir() else cache_dir() / "condensed" / path.name


def title(condenser: str, budget: int, backbone: str, dataset: str, run_id: str | None, shown: int) -> str:
    parts = [condenser, f"{budget} pairs", f"backbone {backbone}", dataset]
    if run_id:
        parts.append(f"record {run_id}")
    if shown < budget:
        parts.append(f"first {shown} shown")
    return " · ".join(parts)


def shown_spec(args: argparse.Namespace, record: dict[str, Any] | None, condenser: str) -> RunSpec:
    """The run the set came from, resolved as `vlbench run` resolves one: the record's spec (none for a
    set directory), the flags over it."""
    flags = {"dataset": args.dataset, "data_root": args.data_root, "backbone": args.backbone}
    return resolve_spec({"condenser": condenser, **(record or {}).get("spec", {})}, flags)


def cmd_show(args: argparse.Namespace) -> int:
    if not 0 < args.max_images or not 0 < args.columns:
        raise VLBenchError("--max-images and --columns must be positive")
    path = Path(args.path)
    if path.suffix == ".json":  # a run record: it knows the set, the data and the backbone
        record = _read_record(path)
        directory, default_output, run_id = condensed_dir(record), path.with_suffix(".png"), record["run_id"]
    else:
        record, directory, default_output, run_id = None, path, Path.cwd() / f"{path.resolve().name}.png", None
    output = Path(args.output) if args.output else default_output

    from vlbench.api import CondensedSet
    from vlbench.data.pairs import text_features
    from vlbench.plugins import registry

    loaded = CondensedSet.load(directory)
    condenser = record["condenser"]["name"] if record else loaded.meta.get("condenser", directory.name)
    spec = shown_spec(args, record, condenser)
    model = registry().get("backbone", spec.backbone)(**spec.backbone_options)  # builds nothing yet
    condensed = loaded.to_canonical(model.normalization)  # a no-op unless format 1
    source = registry().get("dataset", spec.dataset)(**spec.dataset_options)
    data = source.load(Path(spec.data_root).expanduser() if spec.data_root else None)
    n = min(args.max_images, len(condensed))
    captions = pair_captions(condensed, data.split("train").pair_captions, lambda: text_features(data, "train", model), n)
    heading = title(condenser, len(condensed), spec.backbone, spec.dataset, run_id, n)
    write_grid(condensed.images[:n], captions, output, heading, args.columns)
    print(f"wrote {output}")
    return 0


def pair_captions(condensed, captions: list[str], features, n: int) -> list[str]:
    """The first `n` pairs' captions: a coreset's own, else the nearest of the training `captions`,
    whose frozen features `features()` gives (only called for a set with learned text)."""
    if condensed.source_indices is not None:
        return [captions[i] for i in condensed.source_indices[:n].tolist()]
    return nearest_captions(condensed.text_features[:n], features(), captions)


def nearest_captions(text_features, train_features, captions: list[str]) -> list[str]:
    """The caption whose frozen embedding (`train_features`, one row per caption) has the highest cosine similarity to each row."""
    import torch.nn.functional as F

    sims = F.normalize(text_features.float(), dim=1) @ F.normalize(train_features.float(), dim=1).t()
    return [captions[i] for i in sims.argmax(dim=1).tolist()]


# ----------------------------------------------------------------------------- drawing


def wrap(text: str, font, width: int) -> list[str]:
    """Lines of at most `width` pixels, broken between words (inside a word only if it alone is wider)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > width:
            cut = max(i for i in range(1, len(word) + 1) if i == 1 or font.getlength(word[:i]) <= width)
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return lines + [line] if line else lines


def write_grid(images, captions: list[str], output: Path, heading: str = "", columns: int = 10) -> Path:
    """A grid of `images` (canonical pixels: RGB on the [0, 1] scale, clamped to it for drawing), each above its whole caption."""
    import torch.nn.functional as F
    from PIL import Image, ImageDraw, ImageFont

    font, title_font = ImageFont.load_default(FONT_SIZE), ImageFont.load_default(TITLE_SIZE)
    pixels = F.interpolate(images.float().clamp(0, 1), size=(CELL, CELL), mode="nearest")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    wrapped = [wrap(c, font, CELL) for c in captions]
    # Each row is as tall as its longest caption: nothing is cut.
    row_heights = [CELL + 4 + LINE * max(len(w) for w in wrapped[r * columns:(r + 1) * columns]) for r in range(rows)]
    top = GAP + (TITLE_SIZE + 2 * GAP if heading else 0)
    width = GAP + columns * (CELL + GAP)
    canvas = Image.new("RGB", (max(width, int(title_font.getlength(heading)) + 2 * GAP), top + sum(row_heights) + rows * GAP),
                       "white")
    draw = ImageDraw.Draw(canvas)
    if heading:
        draw.text((GAP, GAP), heading, fill="black", font=title_font)
    for i, (img, lines) in enumerate(zip(pixels, wrapped)):
        row, col = divmod(i, columns)
        x, y = GAP + col * (CELL + GAP), top + sum(row_heights[:row]) + row * GAP
        array = (img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        canvas.paste(Image.fromarray(array), (x, y))
        for k, line in enumerate(lines):
            draw.text((x, y + CELL + 4 + k * LINE), line, fill="black", font=font)
    output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output)
    return output
