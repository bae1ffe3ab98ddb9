"""Evaluation on another backbone: `--eval-backbone`, `eval_backbones:`, keys, records and refusals."""
import json
from pathlib import Path

import pytest

from vlbench.cli import main
from vlbench.core import RunSpec, VLBenchError
from vlbench.board.records import ResultsStore, RunRecord
from vlbench.config import expand, read_sweep

REPO = Path(__file__).resolve().parents[1]


def test_an_unset_eval_backbone_stays_out_of_the_spec_and_the_own_backbone_is_unset():
    plain = RunSpec(condenser="random", budget=5)
    assert "eval_backbone" not in plain.to_dict() and "eval_backbone_options" not in plain.to_dict()
    other = RunSpec(condenser="random", budget=5, eval_backbone="convnet-minilm")
    assert other.to_dict()["eval_backbone"] == "convnet-minilm"
    # The condensing backbone's own name (with its options, or none given) is the plain run.
    same = RunSpec(condenser="random", budget=5, backbone_options={"pretrained": None}, eval_backbone="tinyvit-minilm")
    assert same.eval_backbone is None
    assert RunSpec(condenser="random", budget=5, eval_backbone_options={"width": 64}).to_dict() == plain.to_dict()


def test_committed_records_keep_the_run_key_the_planner_computes():
    """The board's records (results/tuning holds runs made under earlier condenser defaults: other keys)."""
    from vlbench.runner import Run

    records = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "records").glob("*.json"))]
    condensed = [r for r in records if not r["condenser"]["reference"]]  # `full`'s key needs its data set's size
    assert condensed
    for r in condensed:
        run = Run(RunSpec.from_dict(r["spec"]))
        assert run.run_key == r["run_key"], r["run_id"]
        assert run.identity == RunRecord(r).identity, r["run_id"]  # the store recognises it


def test_eval_backbones_in_a_grid_are_an_axis():
    specs = expand([{"condenser": "random", "budget": [5, 10], "eval_backbones": ["convnet-minilm", "tinyvit-minilm"]}])
    assert [(s.budget, s.eval_backbone) for s in specs] == [(5, "convnet-minilm"), (5, None), (10, "convnet-minilm"),
                                                            (10, None)]
    with pytest.raises(VLBenchError, match="eval_backbone or eval_backbones, not both"):
        expand([{"condenser": "random", "budget": 5, "eval_backbone": "a", "eval_backbones": ["b"]}])


def test_the_cross_architecture_grids_same_architecture_runs_are_the_boards_own():
    """configs/cross-arch.yaml reuses the board's rows as its tiny-ViT cells: the same specs (tuned or not alike),
    so a sweep skips them instead of rerunning a board row under other settings."""
    board = [s.to_dict() for s in expand(read_sweep(REPO / "configs" / "board.yaml")["grid"])]
    cross = expand(read_sweep(REPO / "configs" / "cross-arch.yaml")["grid"])
    own = [s for s in cross if s.backbone == "tinyvit-minilm" and s.eval_backbone is None and s.condenser != "full"]
    assert len(own) == 3 * 2 * 5  # random, herding, tm, tm-lora, lors at 100 and 200 pairs, 3 seeds
    for spec in own:
        assert spec.to_dict() in board, spec.to_dict()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from vlbench.data.synthscenes import generate

    base = tmp_path_factory.mktemp("eval-backbone")
    generate(base / "data", seed=0, train=24, val=0, test=12, pretrain=0)
    config = base / "tiny.yaml"
    config.write_text(f"data_root: {base / 'data'}\nevals: 1\ndevice: cpu\nbackbone_options: {{pretrained: null}}\n"
                      "eval_backbone_options: {pretrained: null}\nprotocol: {steps: 3, batch_size: 16}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLBENCH_CACHE", str(base / "cache"))
        yield base, config


def test_one_condensed_set_is_evaluated_on_each_backbone_with_one_record_each(env, capsys):
    from vlbench.runner import Run

    base, config = env
    results = base / "results"
    args = ["run", "--condenser", "random", "--budget", "6", "--config", str(config), "--results", str(results)]
    assert main([*args, "--eval-backbone", "convnet-minilm,tinyvit-minilm"]) == 0
    out = capsys.readouterr().out
    assert "random @ 6 pairs on synthscenes/tinyvit-minilm, evaluated on convnet-minilm: mean recall" in out
    other, own = ResultsStore(results).records()
    assert other["eval_backbone"]["name"] == "convnet-minilm" and other["eval_backbone"]["id"].startswith("convnet-minilm")
    assert set(other["eval_backbone"]) == set(other["backbone"]) and other["backbone"]["name"] == "tinyvit-minilm"
    assert "eval_backbone" not in own and "eval_backbone" not in own["spec"]
    # condensed once: the second evaluation reused the set the first one condensed
    assert other["condensed"]["key"] == own["condensed"]["key"] and own["stages"]["condense"]["cached"]
    assert other["run_key"] != own["run_key"]
    assert main(args) == 0  # the plain run is the own-backbone record
    assert "already recorded" in capsys.readouterr().out
    plain = Run(RunSpec.from_dict({**own["spec"], "data_root": str(base / "data")}))
    assert plain.condense_key == other["condensed"]["key"]


@pytest.mark.parametrize("extra, message", [
    (["--eval-backbone", "tinyvit-minilm,nfnet-bert"],
     "evaluation backbone nfnet-bert encodes captions with bert-cls"),
    (["--condenser", "full", "--eval-backbone", "convnet-minilm"],
     "'full' condenses nothing (it trains on every training pair): run it with --backbone convnet-minilm"),
])
def test_an_evaluation_backbone_that_cannot_be_used_is_one_line_before_any_work(env, capsys, extra, message):
    base, config = env
    results = base / "refused"
    plain = base / "no-eval-options.yaml"  # nfnet-bert has no `pretrained` option
    plain.write_text("".join(line for line in config.read_text().splitlines(True) if "eval_backbone" not in line))
    assert main(["run", "--condenser", "random", "--budget", "6", "--config", str(plain), "--results", str(results),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not results.exists()
