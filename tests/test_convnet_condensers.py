"""`convnet-minilm` is a full backbone: every condenser runs on it, and `vlbench run` end to end."""
import json

import pytest

from vlbench.cli import main
from vlbench.data.synthscenes import generate
from vlbench.plugins import Registry
from vlbench.testing import check_condenser
from vlbench_plugins.convnet_minilm import ConvNetMiniLM

# tm and tm-lora with test-sized options (as tests/test_distill.py checks them on the default backbone)
SMALL = {"tm": {"iterations": 3, "syn_steps": 2, "num_experts": 1, "train_epochs": 2, "checkpoint_every": 2}}
SMALL["tm-lora"] = SMALL["tm"]
SMALL["full"] = {"epochs": 1.0}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("VLBENCH_CACHE", str(tmp_path_factory.mktemp("convnet-cache")))
        yield


@pytest.mark.parametrize("name", ["random", "herding", "kcenter", "forgetting", "tm", "tm-lora"])
def test_every_condenser_conforms_on_convnet(name):
    report = check_condenser(Registry().get("condenser", name), budget=10, options=SMALL.get(name),
                             backbone=ConvNetMiniLM())
    assert report.condensed.images.shape == (10, 3, 32, 32)  # condensed at the ConvNet's resolution


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    generate(base / "data", seed=0, train=60, val=4, test=30, pretrain=0)
    return base


@pytest.mark.slow
@pytest.mark.parametrize("condenser, budget", [("random", 50), ("full", None), ("tm-lora", 10)])
def test_vlbench_run_on_convnet(tiny, condenser, budget):
    results = tiny / condenser
    config = tiny / f"{condenser}.yaml"
    config.write_text(json.dumps({"protocol": {"steps": 5, "batch_size": 32}, "condenser_options": SMALL.get(condenser, {})}))
    argv = ["run", "--condenser", condenser, "--backbone", "convnet-minilm", "--data-root", str(tiny / "data"),
            "--evals", "1", "--results", str(results), "--config", str(config)]
    assert main(argv + (["--budget", str(budget)] if budget else [])) == 0
    (record,) = [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]
    assert record["backbone"]["id"] == "convnet-minilm"
    assert 0 <= record["metrics"]["mean"]["mean"] <= 100
