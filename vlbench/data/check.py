"""`vlbench data check`: what a data root holds, against the standard split, in one summary.

Unlike loading, which stops at the first bad file, the check looks at every image (it decodes
each one) and lists all that are missing or unreadable.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from vlbench.api import ImageTextDataset, VLBenchError
from vlbench.data.images import read_rgb
from vlbench.data.sources import size_mismatches
from vlbench.progress import track

MAX_LISTED = 20  # paths listed per kind of problem; the rest are counted


@dataclass
class DataReport:
    dataset: ImageTextDataset
    expected: dict[str, int]
    missing: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one error message per file

    @property
    def problems(self) -> list[str]:
        out = size_mismatches(self.dataset, self.expected)
        if self.missing:
            out.append(f"{len(self.missing)} missing images")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} unreadable images")
        return out


def _decode_error(path: Path) -> str | None:
    try:
        read_rgb(path)
    except VLBenchError as e:
        return str(e)
    return None


def check_dataset(dataset: ImageTextDataset, expected: dict[str, int] | None = None) -> DataReport:
    """Look for every image of every split and decode each one that exists."""
    report = DataReport(dataset, expected or {})
    paths = [p for split in dataset.splits.values() for p in split.image_paths]
    report.missing = [p for p in paths if not p.is_file()]
    present = [p for p in paths if p.is_file()]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        errors = track(pool.map(_decode_error, present, chunksize=64), len(present), "decoding images", "img")
        report.unreadable = [e for e in errors if e is not None]
    return report


def format_report(report: DataReport, header: str) -> str:
    rows = []
    for name, split in report.dataset.splits.items():
        per_image = [len(c) for c in split.captions]
        lo, hi = min(per_image, default=0), max(per_image, default=0)
        spread = f"{lo}" if lo == hi else f"{lo} to {hi} (mean {split.num_pairs / split.num_images:.2f})"
        vocabulary = len({word for caption in split.pair_captions for word in caption.split()})
        rows.append([name, split.num_images, report.expected.get(name, "-"), split.num_pairs, spread, vocabulary])
    table = tabulate(rows, headers=["split", "images", "expected", "captions", "captions/image", "vocabulary"])
    lines = [header, table]
    for label, items in (("missing", list(map(str, report.missing))), ("unreadable", report.unreadable)):
        lines.append(f"{label} images: {len(items) or 'none'}")
        lines += [f"  {item}" for item in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"  ... and {len(items) - MAX_LISTED} more")
    problems = report.problems
    if problems:
        lines.append(f"PROBLEMS: {'; '.join(problems)}")
    else:
        lines.append("OK: every image is readable" + (", split sizes match the standard split" if report.expected else ""))
    return "\n".join(lines)
