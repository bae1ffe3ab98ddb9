"""`mmdm`: listed, written against the public API alone, starts at random's set, and matches better as it runs."""
import ast
from pathlib import Path

import pytest
import torch

import vlbench
from vlbench.plugins import Registry
from vlbench.testing import check_condenser, make_context
from vlbench_plugins.mmdm import MultimodalDistributionMatching, matching_loss

SOURCE = Path(__file__).resolve().parents[1] / "plugins" / "mmdm.py"
SMALL = {"iterations": 3, "batch_real": 64}


@pytest.fixture(autouse=True)
def kit_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "kit-cache"))


def test_it_is_listed():
    assert Registry().get("condenser", "mmdm") is MultimodalDistributionMatching


def test_it_imports_nothing_outside_the_public_api():
    """The worked example of docs/plugins.md: what it imports, a third party may."""
    imported = {}
    for node in ast.walk(ast.parse(SOURCE.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.setdefault(node.module, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update({a.name: set() for a in node.names})
    assert imported.pop("vlbench") <= set(vlbench.__all__)
    # no method engine either (vlbench.tm, vlbench.coreset): only the code-version stamp first-party plugins carry
    assert imported.pop("vlbench.versions") == {"CodeVersion"}
    assert {m.split(".")[0] for m in imported} <= {"__future__", "dataclasses", "torch"}


def test_zero_iterations_is_randoms_set(tmp_path):
    ctx = make_context(tmp_path, budget=10, seed=4)
    mmdm = MultimodalDistributionMatching(iterations=0).condense(ctx)
    random = Registry().get("condenser", "random")().condense(ctx)
    assert torch.equal(mmdm.images, random.images) and torch.equal(mmdm.text_features, random.text_features)


def test_it_conforms_on_two_backbones():
    check_condenser(MultimodalDistributionMatching, budget=10, options=SMALL)
    check_condenser(MultimodalDistributionMatching, budget=10, options=SMALL, backbone="convnet-minilm")


def test_it_lowers_the_matching_loss_on_models_it_never_saw(tmp_path):
    ctx = make_context(tmp_path, budget=10)
    start = MultimodalDistributionMatching(iterations=0).condense(ctx)
    end = MultimodalDistributionMatching(iterations=30, batch_real=64).condense(ctx)
    real = ctx.train.images[ctx.train.pair_image], ctx.train.text_features  # every training pair

    def loss(cs):  # on fresh models of seeds the condenser's derived seeds never are
        return sum(matching_loss(ctx.backbone.build(10**6 + i), real, (cs.images, cs.text_features), 1.0).item()
                   for i in range(3))

    assert loss(end) < 0.8 * loss(start)
    assert end.meta["loss_last"] < end.meta["loss_first"]
