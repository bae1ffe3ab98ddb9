"""Cached artifacts are keyed by the version of the code that builds them (vlbench/versions.py)."""
import json

import pytest

from vlbench.tm.experts import EXPERT_BUFFER, ExpertBuffer, ExpertSpec
from vlbench.versions import CodeVersion

@pytest.fixture(scope="module")
def versions(script):
    return script("code_versions")


def test_every_builder_matches_the_committed_version_and_source(versions):
    committed, now = json.loads(versions.FILE.read_text()), versions.current()
    assert {"text_features", "reference_model", "expert_buffer", "forgetting_history", "condenser:tm-lora"} <= set(now)
    for name in sorted(set(committed) | set(now)):
        assert now.get(name) == committed.get(name), (
            f"builder {name!r} is not as tests/code_versions.json records it (now {now.get(name)}, committed "
            f"{committed.get(name)}): if what it builds changed, bump its CodeVersion number; then run "
            "`python scripts/code_versions.py` and commit the file")


def test_version_1_keeps_the_keys_artifacts_had_and_a_bump_changes_them(monkeypatch, tmp_path):
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))
    # The expert buffer of the committed tm-lora@100 records (results/records/9ac521f4-*.json: their
    # `condensed.cost.shared` artifact), made before buffers had a code version.
    spec = ExpertSpec(epochs=2, lr=0.01, momentum=0.0, weight_decay=0.0005, batch_size=128)
    assert ExpertBuffer.locate("8f6d890e5749346b", "tinyvit-minilm", spec).directory.name == "tinyvit-minilm-c1fcb6efd41dfaab"
    monkeypatch.setattr("vlbench.tm.experts.EXPERT_BUFFER", CodeVersion(EXPERT_BUFFER.name, 2, EXPERT_BUFFER.sources))
    assert ExpertBuffer.locate("8f6d890e5749346b", "tinyvit-minilm", spec).directory.name != "tinyvit-minilm-c1fcb6efd41dfaab"
