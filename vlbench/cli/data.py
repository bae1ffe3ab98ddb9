"""`vlbench data check NAME --data-root DIR`: is a data set complete and readable?

cli.py wires it in with `add_data_commands(subparsers)`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vlbench.core import VLBenchError


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect data sets")
    commands = data.add_subparsers(dest="data_command", required=True)
    check = commands.add_parser(
        "check", help="count images and captions per split, list missing and unreadable images (decodes every image)")
    check.add_argument("name", help="data set name (see `vlbench list`)")
    check.add_argument("--data-root", help="directory holding the data set's images and annotations (docs/data.md)")
    check.set_defaults(func=cmd_data_check)


def cmd_data_check(args: argparse.Namespace) -> int:
    from vlbench.data.check import check_dataset, format_report
    from vlbench.data.sources import KarpathySource
    from vlbench.plugins import registry

    source = registry().get("dataset", args.name)()
    root = Path(args.data_root).expanduser() if args.data_root else None
    if root is not None and not root.is_dir():
        raise VLBenchError(f"data root {root} is not a directory")
    if isinstance(source, KarpathySource):
        # Read the annotations without requiring the images, so that every missing one is listed.
        annotations = source.annotations(root)
        dataset = annotations.build(source.name, root, require_images=False)
        names = ", ".join(p.name for p in annotations.files)
        header = f"{source.name} in {root}, {annotations.form} annotations ({names}), fingerprint {dataset.fingerprint}"
        expected = source.expected_images
    else:
        dataset = source.load(root)
        header, expected = f"{source.name} in {dataset.root}, fingerprint {dataset.fingerprint}", None
    report = check_dataset(dataset, expected)
    print(format_report(report, header))
    return 1 if report.problems else 0
