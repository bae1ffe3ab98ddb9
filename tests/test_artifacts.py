"""The artifact cache: built once (also when processes race), saved whole or not at all, its cost stamped."""
import json
import threading

import pytest

from vlbench import costs
from vlbench.artifacts import artifact_path, cached


def text_artifact(name, built, stage=None, build=None):
    """`cached` for a text file; `built` counts the builds."""
    def make():
        built.append(1)
        return build() if build else f"value {len(built)}"

    return cached("notes", name, make, lambda path: path.read_text(), lambda value, path: path.write_text(value),
                  stage=stage)


def test_built_once_then_loaded(vlbench_cache):
    built = []
    assert text_artifact("a.txt", built) == "value 1"
    assert text_artifact("a.txt", built) == "value 1"  # loaded: not built again
    assert built == [1] and artifact_path("notes", "a.txt").read_text() == "value 1"


def test_a_racing_process_waits_for_the_build_and_loads_it(vlbench_cache):
    built, building, release = [], threading.Event(), threading.Event()

    def slow():
        building.set()
        release.wait(5)
        return "built by the first"

    first = threading.Thread(target=text_artifact, args=("b.txt", built), kwargs={"build": slow})
    first.start()
    building.wait(5)  # the first holds the lock and builds
    got = []
    second = threading.Thread(target=lambda: got.append(text_artifact("b.txt", built)))
    second.start()
    release.set()
    first.join(), second.join()
    assert built == [1] and got == ["built by the first"]


def test_a_failed_build_leaves_nothing_behind(vlbench_cache):
    def fail():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        text_artifact("c.txt", [], stage="reference_model", build=fail)
    assert sorted(p.name for p in artifact_path("notes", "c.txt").parent.iterdir()) == ["c.lock"]


def test_a_stage_is_stamped_and_charged_to_the_run_that_uses_it(vlbench_cache):
    with costs.collecting("run-1") as used:
        text_artifact("d.txt", [], stage="forgetting_history")
    stamp = json.loads(costs.stamp_path(artifact_path("notes", "d.txt")).read_text())
    assert stamp["stage"] == "forgetting_history" and stamp["built_by"] == "run-1"
    with costs.collecting("run-2") as reused:
        text_artifact("d.txt", [], stage="forgetting_history")
    assert [u["built_now"] for u in used + reused] == [True, False]
    assert reused[0]["wall_s"] == stamp["wall_s"]


def test_a_save_that_dies_halfway_leaves_no_artifact(vlbench_cache):
    def half(value, path):
        path.write_text(value[:3])
        raise OSError("disk full")

    with pytest.raises(OSError):
        cached("notes", "e.txt", lambda: "complete", lambda path: path.read_text(), half)
    assert not artifact_path("notes", "e.txt").exists()
    assert cached("notes", "e.txt", lambda: "complete", lambda path: path.read_text(),
                  lambda value, path: path.write_text(value)) == "complete"
