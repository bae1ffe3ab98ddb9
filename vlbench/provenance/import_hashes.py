"""The source a process actually runs: each vlbench and plugin module's file, hashed as it is imported.

A long sweep imports plugin modules lazily, from a checkout that may be edited (or rebased) while
it runs; the commit read at its start then no longer names the code that made a record. An import
hook (installed when `vlbench` is imported) takes each watched module's git blob id at import, so
a record can say which code it ran, whether that is its commit's, and whether a file changed on
disk since it was loaded. Standard library only: it is installed before anything else loads.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

#: Top-level packages whose modules are hashed: vlbench's, and each plugin distribution's (`watch`).
_watched: set[str] = {"vlbench", "vlbench_plugins"}
_loaded: dict[str, tuple[Path, str]] = {}  # module name -> (source file, git blob id at import)
_finding: set[str] = set()


def blob_id(data: bytes) -> str:
    """The id git gives a file's content (`git hash-object`), so a loaded file compares with a commit's."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file_blob(path: Path) -> str | None:
    try:
        return blob_id(path.read_bytes())
    except OSError:
        return None


def _note(name: str, origin: str | None) -> None:
    if origin and origin.endswith(".py") and name not in _loaded:
        path = Path(origin).resolve()
        blob = _file_blob(path)
        if blob is not None:
            _loaded[name] = (path, blob)


class _HashOnImport:
    """A meta path finder that finds nothing itself: it hashes a watched module's file as it is looked up."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):
        if name.partition(".")[0] in _watched and name not in _finding and name not in sys.modules:
            _finding.add(name)
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            finally:
                _finding.discard(name)
            if spec is not None:
                _note(name, spec.origin)
        return None  # the regular finders import it, from the file just hashed


def install() -> None:
    """Hash every watched module imported from now on (and those already loaded)."""
    if not any(isinstance(f, _HashOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _HashOnImport())
    _note_loaded()


def watch(top_level: str) -> None:
    """Hash the modules of a plugin distribution's package too (the registry calls it before loading one)."""
    _watched.add(top_level)
    _note_loaded()


def _note_loaded() -> None:
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in _watched:
            _note(name, getattr(module, "__file__", None))


def _relative(name: str, path: Path) -> Path:
    """`path` relative to the directory holding its top-level package (a repository's root, for vlbench)."""
    depth = name.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.relative_to(path.parents[depth])


def loaded_files() -> dict[str, tuple[Path, str]]:
    """{path relative to its package's root directory: (file, blob id at import)} of every watched module
    imported in this process (`vlbench/runner.py`, `plugins/tm.py` for the first-party plugins)."""
    _note_loaded()
    return {str(_relative(name, path)): (path, blob) for name, (path, blob) in sorted(_loaded.items())}


def changed_since_import() -> list[str]:
    """Loaded files whose content on disk is no longer what was imported."""
    return sorted(rel for rel, (path, blob) in loaded_files().items() if _file_blob(path) != blob)
