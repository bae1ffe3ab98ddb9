"""scripts/quality_curve.py: the curve's points, its reference lines and its files, from records built here
with the structure of a real record (results/tuning/records)."""
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlbench.api import VLBenchError
from vlbench.board.records import ResultsStore, new_run_id

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "quality_curve.py"
KEYS = ("tr@1", "tr@5", "tr@10", "ir@1", "ir@5", "ir@10", "mean")
TM_CONFIG = {"iterations": 100, "syn_steps": 10, "lr_img": 1.0, "lr_txt": 0.1, "learn_lrs": False, "batch_syn": 100}


@pytest.fixture(scope="module")
def quality_curve():
    return SimpleNamespace(**runpy.run_path(str(SCRIPT)))  # the script's functions; its main block does not run


def record(condenser: str, budget: int, seed: int, mean: float, config: dict, own_s: float = 100.0,
           split: str = "val", expert_s: float | None = 60.0) -> dict:
    """A run record as the runner writes it, less the provenance fields the curve does not read."""
    run_key = f"{condenser}{budget}{seed}{sorted(config.items())}".encode().hex()[:16]
    metrics = {k: mean for k in KEYS}
    shared = [] if condenser == "random" else [{"stage": "expert_buffer", "wall_s": expert_s, "built_now": False,
                                                "built_at": None, "built_by": None, "artifact": "$VLBENCH_CACHE/experts/x"}]
    return {
        "schema": 2, "run_id": new_run_id(run_key), "run_key": run_key, "created": f"2026-11-30T0{seed}:00:00Z",
        "backbone": {"name": "tinyvit-minilm", "id": "tinyvit-minilm", "version": "0.1.0", "config": {}},
        "budget": budget,
        "condensed": {"cost": {"attempts": 1, "own_s": own_s, "shared": shared}, "extra_bytes": 0, "key": "k",
                      "learned_lrs": None, "num_pairs": budget, "soft_targets": None, "storage_bytes": 1},
        "condenser": {"config": config, "config_hash": "", "distribution": "vlbench", "name": condenser,
                      "reference": False, "version": "0.1.0"},
        "dataset": {"name": "synthscenes", "fingerprint": "8f6d890e5749346b", "version": "0.1.0"},
        "device": "cpu",
        "metrics": {"mean": metrics, "std": {k: 0.5 for k in KEYS}, "per_seed": [metrics] * 5},
        "protocol": {"id": "v2-38042a", "version": "2"},
        "seeds": [0, 1, 2, 3, 4],
        "spec": {"condenser": condenser, "budget": budget, "seed": seed, "split": split, "evals": 5},
        "split": split,
        "stages": {"condense": {"cached": False, "peak_mem_mb": 1.0, "wall_s": own_s}},
        "torch_threads": 1,
    }


def tm(seed: int, mean: float, own_s: float = 100.0, **options) -> dict:
    return record("tm-lora", 100, seed, mean, {**TM_CONFIG, **options}, own_s)


@pytest.fixture
def results(tmp_path) -> Path:
    store = ResultsStore(tmp_path / "results")
    for r in [
        tm(0, 40.0, 300), tm(1, 44.0, 320),                                          # 100 iterations
        tm(0, 50.0, 900, iterations=300), tm(1, 52.0, 1000, iterations=300),
        tm(0, 55.0, 3000, iterations=1000),                                          # one seed only
        tm(0, 48.0, 1200, syn_steps=40, unroll="tesla"), tm(1, 46.0, 1300, syn_steps=40, unroll="tesla"),
        tm(0, 12.0, lr_img=30.0), tm(0, 13.0, lr_img=30.0, iterations=300),           # another family
        record("tm-lora", 100, 2, 99.0, TM_CONFIG, split="test"),                    # another split
        record("tm-lora", 200, 0, 60.0, TM_CONFIG),                                  # another budget
        record("random", 100, 0, 9.0, {}), record("random", 100, 1, 11.0, {}),
        record("random", 200, 0, 25.0, {}), record("random", 500, 0, 60.0, {}),
    ]:
        store.add(r)
    return store.directory


def test_points_are_one_family_over_condensing_seeds(quality_curve, results):
    table, rows, randoms = quality_curve.curve(ResultsStore(results).records(), "val", "tm-lora", 100)
    assert [quality_curve.compute(r) for r in rows] == [(100, 10, "full"), (100, 40, "tesla"), (300, 10, "full"),
                                                        (1000, 10, "full")]
    first = rows[0]
    assert first["mean_mean"] == pytest.approx(42.0) and first["mean_std"] == pytest.approx(2 ** 1.5)  # stdev(40, 44)
    assert first["std_over"] == "seeds" and first["seeds"] == [0, 1]
    assert first["condense_wall_s"] == pytest.approx((300 + 320) / 2 + 60)  # own time plus the expert buffer
    assert first["distil_s"] == pytest.approx((300 + 320) / 2)  # own time alone, the plot's time axis
    assert rows[-1]["std_over"] == "models"  # one seed: the spread of its evaluation models
    assert sorted(randoms) == [100, 200] and randoms[100]["mean_mean"] == pytest.approx(10.0)
    assert table.split == "val"


def test_writes_the_png_and_the_table(quality_curve, results, tmp_path):
    quality_curve.main([str(results / "records"), "--output", str(tmp_path / "out" / "curve")])
    png = tmp_path / "out" / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(png).shape[:2] == (480, 1200)  # two panels, 10 x 4 in at 120 dpi
    lines = (tmp_path / "out" / "curve.md").read_text().splitlines()
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    assert body[0][:4] == ["iterations", "syn_steps", "unroll", "mean recall (%)"]
    assert body[1][:7] == ["100", "10", "full", "42.0 ± 2.8", "0, 1", "5.2", "6.2"]
    assert body[4][:4] == ["1000", "10", "full", "55.0 ± 0.5 (std over evaluation models)"]
    assert [row[0] for row in body[5:]] == ["random, 100 pairs", "random, 200 pairs"]
    assert body[6][3] == "25.0 ± 0.5 (std over evaluation models)"


def test_no_matching_records_is_one_line(quality_curve, results):
    with pytest.raises(VLBenchError, match="no test-split records of tm-lora at 100 pairs"):
        quality_curve.curve(ResultsStore(results).records()[:9], "test", "tm-lora", 100)
    with pytest.raises(VLBenchError, match="holds no records/"):
        quality_curve.main([str(results / "missing")])
