"""A committed record reproduces exactly on this machine (scripts/golden_record.py)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "golden_record.py"


@pytest.fixture(scope="module")
def golden():
    spec = importlib.util.spec_from_file_location("golden_record", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_golden_record_reproduces_its_per_seed_metrics_exactly(golden, tmp_path, monkeypatch):
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    committed = golden.committed()
    fresh = golden.golden_run(tmp_path, tmp_path / "results")
    assert fresh["dataset"]["fingerprint"] == committed["dataset"]["fingerprint"]
    assert fresh["backbone"]["weights_sha256"] == committed["backbone"]["weights_sha256"]
    assert fresh["protocol"]["id"] == committed["protocol"]["id"], "protocol changed: rerun scripts/golden_record.py"
    assert fresh["metrics"]["per_seed"] == committed["metrics"]["per_seed"]
