"""Planning a sweep resolves runs without building a model: `vlbench sweep --dry-run` imports torch, but not
the model libraries (peft pulls in transformers, timm torchvision: together longer than torch itself)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("peft", "transformers", "timm", "torchvision", "open_clip", "sentence_transformers")

BLOCK_MODEL_LIBRARIES = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_a_dry_run_plans_every_kind_of_run_without_the_model_libraries(tmp_path):
    from vlbench.data.synthscenes import generate

    generate(tmp_path / "data", seed=0, train=24, val=0, test=12, pretrain=0)
    (tmp_path / "sweep.yaml").write_text(
        f"grid:\n  - {{condenser: [random, forgetting, tm-lora, lors, full], budget: 6, data_root: {tmp_path / 'data'}}}\n"
        f"  - {{condenser: random, budget: 6, data_root: {tmp_path / 'data'}, eval_backbones: [convnet-minilm]}}\n")
    (tmp_path / "sitecustomize.py").write_text(BLOCK_MODEL_LIBRARIES)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "VLBENCH_CACHE": str(tmp_path / "cache")}
    blocked = subprocess.run([sys.executable, "-c", "import peft"], capture_output=True, text=True, env=env)
    assert blocked.returncode != 0 and "peft is blocked" in blocked.stderr  # the block is in force
    dry = subprocess.run([sys.executable, "-m", "vlbench.cli", "sweep", str(tmp_path / "sweep.yaml"), "--dry-run",
                          "--results", str(tmp_path / "results")], capture_output=True, text=True, env=env, cwd=REPO)
    assert dry.returncode == 0, dry.stderr
    assert "6 runs: 0 done, 6 to run" in dry.stdout
    assert "prepare  stage  expert_buffer" in dry.stdout and "prepare  stage  forgetting_history" in dry.stdout


def test_configs_and_sweep_files_are_read_without_torch():
    """vlbench/config.py: every run of a sweep file resolved, and a plugin command's --config, with no torch."""
    code = ("import sys; from vlbench.config import expand, read_sweep, spec_from_config; "
            "print(len(expand(read_sweep('configs/board.yaml')['grid']))); "
            "spec_from_config('configs/flickr30k-tm-lora.yaml', {}, {}); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    import math

    import yaml

    grid = yaml.safe_load((REPO / "configs/board.yaml").read_text())["grid"]
    board = sum(math.prod(len(v) for v in entry.values() if isinstance(v, list)) for entry in grid)  # its axes' product
    assert board > 90 and done.stdout.split() == [str(board), "False"]
