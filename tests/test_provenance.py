"""Records name the code that ran (hashed as it was imported), and a committed results directory takes
only records of committed code (vlbench/provenance/)."""
import importlib
import subprocess
import sys

import pytest

from vlbench.provenance import import_hashes
from vlbench.core import RunSpec, VLBenchError
from vlbench.provenance import check_recordable, cpu, has_code_changes, tracked_by_git


def test_a_watched_module_is_hashed_as_imported_and_a_later_edit_is_seen(tmp_path, monkeypatch):
    package = tmp_path / "vlbench_probe_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_hashes.watch("vlbench_probe_plugin")  # as the registry does before loading a plugin distribution
    module = importlib.import_module("vlbench_probe_plugin.mod")
    (package / "mod.py").write_text("VALUE = 2\n")  # edited while the process runs
    files = import_hashes.loaded_files()
    path, blob = files["vlbench_probe_plugin/mod.py"]
    assert blob == import_hashes.blob_id(b"VALUE = 1\n") and module.VALUE == 1  # what ran, not what is on disk
    assert "vlbench_probe_plugin/mod.py" in import_hashes.changed_since_import()
    assert "vlbench/runner.py" not in import_hashes.changed_since_import()
    sys.modules.pop("vlbench_probe_plugin.mod")
    sys.modules.pop("vlbench_probe_plugin")


def test_vlbench_modules_are_hashed_with_their_git_blob_ids():
    import vlbench.runner  # noqa: F401

    path, blob = import_hashes.loaded_files()["vlbench/runner.py"]
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()
    assert blob == expected


@pytest.fixture
def committed_results(tmp_path):
    """A git checkout whose results/ holds a committed record."""
    repo = tmp_path / "repo"
    (repo / "results" / "records").mkdir(parents=True)
    (repo / "results" / "records" / "old.json").write_text("{}")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    return repo / "results"


CLEAN = {"commit": "abc1234", "dirty": False, "code": {"differs_from_commit": [], "changed_since_import": []}}


@pytest.mark.parametrize("source, why", [
    ({**CLEAN, "dirty": True}, "uncommitted changes"),
    ({**CLEAN, "code": {"differs_from_commit": [], "changed_since_import": ["plugins/tm.py"]}}, "changed on disk"),
    ({**CLEAN, "code": {"differs_from_commit": ["vlbench/train.py"], "changed_since_import": []}}, "not commit abc1234's"),
])
def test_a_committed_results_directory_refuses_records_no_commit_holds(committed_results, tmp_path, source, why):
    assert tracked_by_git(committed_results) and not tracked_by_git(tmp_path / "scratch")
    with pytest.raises(VLBenchError, match=f"refusing to record into .*{why}.*--allow-dirty"):
        check_recordable(committed_results, source, allow_dirty=False)
    check_recordable(committed_results, source, allow_dirty=True)
    check_recordable(tmp_path / "scratch", source, allow_dirty=False)  # not tracked: scratch results
    check_recordable(committed_results, CLEAN, allow_dirty=False)


def test_run_refuses_before_any_work(committed_results, monkeypatch):
    from vlbench import runner

    monkeypatch.setattr("vlbench.provenance.source_commit", lambda: {"commit": "abc1234", "dirty": True})
    monkeypatch.setattr("vlbench.evaluation.Evaluation.execute", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(VLBenchError, match="refusing to record"):
        runner.run(RunSpec("random", 10), committed_results, progress=False)
    assert [p.name for p in (committed_results / "records").iterdir()] == ["old.json"]


def test_the_cpu_is_named_with_torchs_instruction_set():
    import torch

    info = cpu()
    assert info["model"] and info["capability"] == torch.backends.cpu.get_cpu_capability()


def test_a_changed_output_is_not_a_code_change_but_a_changed_source_or_config_is(committed_results):
    repo = committed_results.parent
    for path in ("vlbench/run.py", "configs/board.yaml"):
        (repo / path).parent.mkdir(exist_ok=True)
        (repo / path).write_text("committed\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code"], check=True)
    (committed_results / "records" / "old.json").write_text('{"a study database or record": "grew"}')
    assert not has_code_changes(repo)  # a tuning study writing its committed database while others start
    for path in ("vlbench/run.py", "configs/board.yaml"):
        (repo / path).write_text("edited\n")
        assert has_code_changes(repo)
        (repo / path).write_text("committed\n")
