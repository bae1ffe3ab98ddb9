"""A short tm-lora distillation beats its own starting point (the seeded random pairs) on val."""
import pytest

from vlbench.core import RunSpec, TrainProtocol
from vlbench.data.synthscenes import generate
from vlbench.runner import run


@pytest.mark.slow
def test_a_short_distillation_beats_its_random_start_on_val(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    generate(tmp_path / "data", 0, train=300, val=50, test=0, pretrain=0)

    def val_recall(iterations: int) -> float:
        options = dict(iterations=iterations, syn_steps=5, num_experts=1, train_epochs=3, checkpoint_every=100)
        # lr 0.01: on this 300-image slice the engine distils clearly there (27 vs 18 at 30 iterations), while
        # at protocol v2's 0.03 twenty iterations are level with the start; the defaults' quality on the real
        # data is judged by the val records (docs/protocol.md), this test guards the mechanism.
        spec = RunSpec("tm-lora", 30, data_root=str(tmp_path / "data"), evals=2, split="val",
                       condenser_options=options, protocol=TrainProtocol(steps=150, lr=0.01))
        return run(spec, tmp_path / "results", progress=False)["metrics"]["mean"]["mean"]

    start, distilled = val_recall(0), val_recall(20)  # iteration 0 is the random coreset of the same seed
    assert distilled > start + 3, f"20 iterations: {distilled:.1f} vs {start:.1f} at the start"
