"""`convnet-minilm` and `convnetw32-minilm` are full backbones: every condenser runs on them, and `vlbench run`
end to end."""
import json

import pytest

from vlbench.cli import main
from vlbench.data.synthscenes import generate
from vlbench.plugins import Registry
from vlbench.testing import check_condenser
from vlbench_plugins.convnet_minilm import ConvNetMiniLM, ConvNetW32MiniLM

# tm and tm-lora with test-sized options (as tests/test_distill.py checks them on the default backbone)
SMALL = {"tm": {"iterations": 3, "syn_steps": 2, "num_experts": 1, "train_epochs": 2, "checkpoint_every": 2}}
SMALL["tm-lora"] = SMALL["lors"] = SMALL["tm"]
SMALL["full"] = {"epochs": 1.0}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("VLBENCH_CACHE", str(tmp_path_factory.mktemp("convnet-cache")))
        yield


@pytest.mark.parametrize("backbone", [ConvNetMiniLM, ConvNetW32MiniLM])
@pytest.mark.parametrize("name", ["random", "herding", "kcenter", "forgetting", "tm", "tm-lora", "lors"])
def test_every_condenser_conforms_on_convnet(name, backbone):
    report = check_condenser(Registry().get("condenser", name), budget=10, options=SMALL.get(name),
                             backbone=backbone())  # the shipped pretrained checkpoint
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


@pytest.mark.slow
def test_a_set_condensed_on_one_backbone_is_evaluated_on_another(tiny):
    """`vlbench run --condenser random --budget 50 --eval-backbone convnet-minilm`: condensed once on tinyvit-minilm,
    evaluated by convnet-minilm models on its own pixels (resized to 32 px, its normalisation)."""
    from vlbench.api import CondensedSet, RunSpec
    from vlbench.data.synthscenes import SynthScenes
    from vlbench.board.tables import cross_tables, tables
    from vlbench.data.pairs import load_pairs
    from vlbench.cli.show import condensed_dir
    from vlbench.train import TrainData, evaluate, train

    results = tiny / "cross"
    config = tiny / "cross.yaml"
    config.write_text(json.dumps({"protocol": {"steps": 5, "batch_size": 32}}))
    base = ["run", "--condenser", "random", "--budget", "50", "--data-root", str(tiny / "data"), "--evals", "1",
            "--results", str(results), "--config", str(config)]
    assert main(base) == 0
    assert main([*base, "--eval-backbone", "convnet-minilm"]) == 0
    records = sorted((json.loads(p.read_text()) for p in (results / "records").glob("*.json")), key=lambda r: r["created"])
    same, cross = records
    assert "eval_backbone" not in same and cross["eval_backbone"]["id"] == "convnet-minilm"
    assert cross["backbone"]["id"] == "tinyvit-minilm" and cross["condensed"]["key"] == same["condensed"]["key"]
    assert cross["stages"]["condense"]["cached"]  # condensed once, whatever evaluates it
    # The evaluation models trained on the set as convnet-minilm takes it: resized to 32 px, its normalisation.
    convnet = ConvNetMiniLM()
    condensed = CondensedSet.load(condensed_dir(cross))
    dataset = SynthScenes().load(tiny / "data")
    model = train(convnet.build(0), TrainData.from_condensed(condensed.pixels_for(convnet), condensed.text_features),
                  RunSpec.from_dict(cross["spec"]).protocol, seed=0)
    assert cross["metrics"]["per_seed"] == [evaluate(model, load_pairs(dataset, "test", convnet))]
    [table] = tables(records)
    assert [r["run_ids"] for r in table.rows] == [[same["run_id"]]]  # the per-backbone table: same architecture only
    [crossed] = cross_tables(records)
    assert crossed.backbones == ["convnet-minilm", "tinyvit-minilm"]
    assert crossed.rows[0]["cells"]["convnet-minilm"]["run_ids"] == [cross["run_id"]]
