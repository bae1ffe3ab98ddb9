"""The committed golden records reproduce exactly on this machine, through `vlbench reproduce`'s machinery
in a fresh cache (scripts/golden_record.py): a coreset run and a distiller run, experts included."""
import pytest

from vlbench.board.reproduce import reproduce


@pytest.mark.slow
@pytest.mark.parametrize("name", ["random", "tm-lora"])
def test_a_golden_record_reproduces_its_per_seed_metrics_exactly(golden, name, tmp_path):
    committed = golden.committed()[name]
    comparison = reproduce(committed, data_root=str(golden.data_tree(tmp_path)), progress=False)
    fresh = comparison.rerun
    assert fresh["dataset"]["fingerprint"] == committed["dataset"]["fingerprint"]
    assert fresh["backbone"]["weights_sha256"] == committed["backbone"]["weights_sha256"]
    assert fresh["protocol"]["id"] == committed["protocol"]["id"], "protocol changed: rerun scripts/golden_record.py"
    assert comparison.first_difference() is None, comparison.summary()
    assert comparison.matches, comparison.summary()
