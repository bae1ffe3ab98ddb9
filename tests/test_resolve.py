"""One resolver for every command, the resolved run's keys, and a core that needs no torch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlbench.cli import build_parser, specs_from_args
from vlbench.core import RunSpec, VLBenchError, resolve_spec
from vlbench.data.synthscenes import generate
from vlbench.cli.show import shown_spec
from vlbench.config import expand
from vlbench_plugins.tm_cli import _run_for

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"condenser": "tm-lora", "budget": 7, "seed": 2, "evals": 3, "split": "val", "protocol": {"steps": 5},
          "condenser_options": {"iterations": 2}, "backbone_options": {"pretrained": None}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("resolve")
    generate(base / "data", seed=0, train=12, val=2, test=4, pretrain=0)
    config = {**CONFIG, "data_root": str(base / "data")}
    (base / "run.yaml").write_text(json.dumps(config))  # JSON is YAML
    return base, config


def test_run_sweep_experts_and_show_resolve_one_config_alike(tiny):
    from vlbench.runner import Run

    base, config = tiny
    parser = build_parser()
    (run,), _ = specs_from_args(parser.parse_args(["run", "--config", str(base / "run.yaml")]))
    (swept,) = expand([config])
    experts = _run_for(parser.parse_args(["experts", "--config", str(base / "run.yaml")]))
    shown = shown_spec(parser.parse_args(["show", "record.json"]), {"spec": config}, "tm-lora")
    assert run == swept == shown == resolve_spec(config)
    assert (run.seed, run.evals, run.split, run.protocol.steps, run.budget) == (2, 3, "val", 5, 7)
    assert experts.spec == Run(run).spec  # experts resolves the same run


def test_flags_override_the_config_and_a_missing_condenser_is_one_line(tiny):
    base, _ = tiny
    parser = build_parser()
    (spec,), _ = specs_from_args(parser.parse_args(["run", "--config", str(base / "run.yaml"), "--seed", "5"]))
    assert spec.seed == 5 and spec.evals == 3
    assert shown_spec(parser.parse_args(["show", "r.json", "--backbone", "convnet-minilm"]), {"spec": CONFIG},
                      "random").backbone == "convnet-minilm"
    with pytest.raises(VLBenchError, match="no condenser given"):
        resolve_spec({"budget": 3})


def test_a_spelled_out_default_backbone_option_is_the_default_run():
    from vlbench.runner import Run

    default = Run(RunSpec("random", 5))
    spelled = Run(RunSpec("random", 5, backbone_options={"lora_rank": 4, "dropout": 0}))
    assert spelled.backbone.id == default.backbone.id == "tinyvit-minilm"
    assert spelled.spec == default.spec and spelled.run_key == default.run_key
    other = Run(RunSpec("random", 5, backbone_options={"lora_rank": 2}))
    assert other.backbone.id != "tinyvit-minilm" and other.run_key != default.run_key
    assert other.spec.backbone_options == {"lora_rank": 2}
    # evaluated on its own name with the same effective options: the plain run
    plain = Run(RunSpec("random", 5, backbone_options={"pretrained": None}))
    same = Run(RunSpec("random", 5, backbone_options={"pretrained": None, "lora_rank": 4},
                       eval_backbone="tinyvit-minilm", eval_backbone_options={"pretrained": None}))
    assert same.spec == plain.spec and same.run_key == plain.run_key and same.eval_backbone is same.backbone


def test_a_run_recorded_with_an_option_spelled_out_is_the_run_once_that_value_is_the_default(tiny, tmp_path):
    """A record that spelled out forgetting's `lr: 0.01` (made before 0.01 became the default) is found by the run
    that leaves it out, by `vlbench run` and by a sweep; every run key stays what it was."""
    from vlbench.board.records import ResultsStore, new_run_id
    from vlbench.runner import Run, recorded
    from vlbench.sweep.plan import Sweep, make_plan

    base, _ = tiny
    common = {"condenser": "forgetting", "budget": 5, "data_root": str(base / "data")}
    spelled = Run(resolve_spec({**common, "condenser_options": {"lr": 0.01}}))
    plain = Run(resolve_spec(common))
    assert spelled.run_key != plain.run_key and plain.identity == plain.run_key  # the keys are untouched
    ResultsStore(tmp_path).add({  # what Evaluation.record writes for these fields
        "schema": 2, "run_id": new_run_id(spelled.run_key), "run_key": spelled.run_key,
        "created": "2026-12-01T00:00:00Z", "spec": {**spelled.spec.to_dict(), "data_root": None},
        "condenser": {"name": "forgetting", "config": spelled.condenser.config_dict()}})
    assert recorded(plain, tmp_path)["run_key"] == spelled.run_key
    other = Run(resolve_spec({**common, "condenser_options": {"lr": 0.02}}))
    assert recorded(other, tmp_path) is None  # another value is another run
    plan = make_plan(Sweep("s", [{**common, "condenser_options": [{}, {"lr": 0.01}, {"lr": 0.02}]}], str(tmp_path)))
    assert len(plan.runs) == 2 and len(plan.done) == 1  # lr 0.01 spelled out is the plain run: planned once, done


def test_the_full_reference_resolves_its_budget_and_keeps_its_committed_run_key():
    from vlbench.runner import Run

    records = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "records").glob("*.json"))]
    full = [r for r in records if r["condenser"]["reference"] and r["dataset"]["name"] == "synthscenes"]
    assert full
    for r in full[:2]:
        run = Run(RunSpec.from_dict({**r["spec"], "budget": 0}))
        assert run.spec.budget == r["budget"] == 40000
        assert run.run_key == r["run_key"], r["run_id"]


def test_a_budget_below_one_fails_before_any_work():
    from vlbench.runner import Run

    with pytest.raises(VLBenchError, match="budget must be a positive number of pairs, got 0"):
        Run(RunSpec("random", 0))


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm", "open_clip", "peft"):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_leaderboard_and_help_run_with_torch_unimportable(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def vlbench(*args):
        return subprocess.run([sys.executable, "-m", "vlbench.cli", *args], capture_output=True, text=True, env=env,
                              cwd=REPO)

    blocked = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert blocked.returncode != 0 and "torch is blocked" in blocked.stderr  # the block is in force
    out = tmp_path / "board.md"
    board = vlbench("leaderboard", "--results", str(REPO / "results"), "--output", str(out), "--min-seeds", "3")
    assert board.returncode == 0, board.stderr
    assert "tm-lora" in out.read_text() and "| full" in out.read_text()
    assert vlbench("--help").returncode == 0


def test_first_party_plugins_import_only_the_public_api():
    import ast

    import vlbench

    public = set(vlbench.PUBLIC_MODULES)
    files = [*(REPO / "plugins").glob("*.py"), *(REPO / "plugins" / "vlbench-kmeans").rglob("*.py")]
    used = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vlbench":
                used.add((path.name, node.module, *(a.name for a in node.names if node.module == "vlbench")))
    assert used
    for name, module, *names in used:
        if module == "vlbench":
            assert set(names) <= set(vlbench.__all__), (name, names)
        else:
            assert any(module == m or module.startswith(m + ".") for m in public), (name, module)
