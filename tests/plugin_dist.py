"""Write a real (unpacked) distribution with `vlbench` entry points into a directory, for tests."""
from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path


def install_dist(site: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.0") -> None:
    """Create `dist`'s dist-info (METADATA + entry_points.txt) and its modules under `site`.

    Putting `site` on the path is the caller's job (monkeypatch.syspath_prepend, PYTHONPATH).
    """
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[vlbench]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(module, None)  # an earlier test's module of the same name must not be reused
    importlib.invalidate_caches()
