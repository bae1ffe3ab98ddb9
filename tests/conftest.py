"""Shared fixtures."""
import pytest


@pytest.fixture
def vlbench_cache(tmp_path, monkeypatch):
    """A private, empty VLBENCH_CACHE for one test."""
    cache = tmp_path / "vlbench-cache"
    monkeypatch.setenv("VLBENCH_CACHE", str(cache))
    return cache
