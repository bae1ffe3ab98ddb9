"""Shared fixtures."""
import pytest


@pytest.fixture
def vlbench_cache(tmp_path, monkeypatch):
    """A private, empty VLBENCH_CACHE for one test."""
    cache = tmp_path / "vlbench-cache"
    monkeypatch.setenv("VLBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def golden():
    """scripts/golden_record.py as a module: the golden specs, their data tree and the committed records."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "golden_record.py"
    spec = importlib.util.spec_from_file_location("golden_record", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
