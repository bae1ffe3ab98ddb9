"""Shared fixtures."""
import pytest


@pytest.fixture
def vlbench_cache(tmp_path, monkeypatch):
    """A private, empty VLBENCH_CACHE for one test."""
    cache = tmp_path / "vlbench-cache"
    monkeypatch.setenv("VLBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def script():
    """A loader of scripts/NAME.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def golden(script):
    """scripts/golden_record.py as a module: the golden specs, their data tree and the committed records."""
    return script("golden_record")
