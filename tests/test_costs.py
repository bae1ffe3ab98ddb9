"""Shared stages are charged to every run that uses them, built now or reused (vlbench.costs)."""
import json

from vlbench import costs


def test_a_built_stage_is_stamped_and_a_reuse_is_charged_its_stamp(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))
    artifact = tmp_path / "reference" / "model.safetensors"
    with costs.collecting("run-a") as first:
        with costs.building("reference_model", artifact):
            artifact.parent.mkdir(parents=True)
            artifact.write_bytes(b"weights")
        costs.reusing("reference_model", artifact)  # used twice in one run: charged once
    [built] = first
    assert built["built_now"] and built["built_by"] == "run-a" and built["wall_s"] >= 0
    assert built["artifact"] == "$VLBENCH_CACHE/reference/model.safetensors"
    stamp = json.loads(costs.stamp_path(artifact).read_text())
    with costs.collecting("run-b") as second:
        costs.reusing("reference_model", artifact)
    assert second == [{**stamp, "built_now": False, "artifact": built["artifact"]}]
    assert second[0]["built_by"] == "run-a"  # whose record built it


def test_a_failed_build_leaves_no_stamp_and_outside_a_run_nothing_is_collected(tmp_path):
    artifact = tmp_path / "x"
    try:
        with costs.building("forgetting_history", artifact):
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert not costs.stamp_path(artifact).exists()
    with costs.collecting("run") as entries:
        costs.reusing("forgetting_history", artifact)
    assert entries[0]["wall_s"] is None  # unknown, not free
