"""`forgetting`: the pairs forgotten most often while a model trains on all pairs.

The per-epoch outcomes are cached per (data set, backbone, protocol, seed, epochs), so every
budget reuses one training run: the shared stage `forgetting_history`, which a sweep builds once
before the runs that need it.
"""
import dataclasses
from dataclasses import dataclass

import torch

from vlbench.api import CondensedSet, CondenseContext, Condenser, TrainProtocol, VLBenchError, option, stable_hash
from vlbench.artifacts import cached
from vlbench.core import FULL_DATA_LR
from vlbench.coreset import check_learned, correctness_history, forgetting_counts, most_forgotten, training_steps
from vlbench.spaces import IntRange, LogUniform
from vlbench.stages import Stage, StageInput
from vlbench.storage import save_tensors
from vlbench.versions import CodeVersion

#: What trains the history and probes it (bump when it changes: it invalidates the cached outcomes). The
#: number was in the key from the start (as the probe's version), so it stays there at 1 too.
HISTORY = CodeVersion("forgetting_history", 1, ("vlbench_plugins.forgetting", "vlbench.coreset", "vlbench.train"))


@dataclass
class ForgettingConfig:
    epochs: int = option(6, "epochs of full-data training; forgetting events happen between consecutive ones",
                         search=IntRange(2, 10))
    lr: float | None = option(FULL_DATA_LR, "full-data training lr: full's, chosen on val (docs/protocol.md); "
                                    "null: the protocol's", search=LogUniform(0.001, 0.1))

    def __post_init__(self):
        if self.epochs < 2:
            raise VLBenchError(f"forgetting needs at least 2 epochs to see a pair forgotten, got epochs={self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise VLBenchError(f"forgetting: lr must be positive or null (the protocol's), got {self.lr}")


class Forgetting(Condenser):
    name = "forgetting"
    code_version = CodeVersion("condenser:forgetting", 1, ("vlbench_plugins.forgetting", "vlbench.coreset"))
    Config = ForgettingConfig
    requires = frozenset({"forgetting_history"})

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        ctx.check_budget()  # before training for nothing
        history = self.history(ctx)
        check_learned(history, min(ctx.protocol.batch_size, len(ctx.train)))
        counts = forgetting_counts(history)
        picked = most_forgotten(counts, ctx.budget, ctx.seed)
        return CondensedSet.from_indices(ctx.train, picked.tolist(), condenser=self.name,
                                         forgetting_events=counts[picked].tolist())

    def training_protocol(self, protocol: TrainProtocol) -> TrainProtocol:
        return protocol if self.config.lr is None else dataclasses.replace(protocol, lr=self.config.lr)

    def history(self, ctx: CondenseContext) -> torch.Tensor:
        """(epochs, pairs) probe outcomes of a model trained on all pairs from ctx.seed, cached."""
        from safetensors.torch import load_file

        def train() -> torch.Tensor:
            model = ctx.backbone.build(ctx.seed, ctx.device)
            protocol = self.training_protocol(ctx.protocol)
            steps = training_steps(len(ctx.train), protocol, self.config.epochs)
            with ctx.progress(steps, "forgetting: full-data training", "step") as bar:
                return correctness_history(model, ctx.train, protocol, self.config.epochs, ctx.seed, ctx.device,
                                           on_step=bar.update)

        return cached("forgetting", f"{ctx.dataset.name}-{ForgettingHistory().key(self, ctx)}.safetensors", train,
                      lambda path: load_file(str(path))["correct"].bool(),
                      lambda history, path: save_tensors({"correct": history.to(torch.uint8)}, path),
                      stage="forgetting_history")


class ForgettingHistory(Stage):
    """The probe outcomes of one full-data training run, shared by forgetting runs at every budget."""

    name = "forgetting_history"
    code_version = HISTORY

    def key(self, condenser: Forgetting, run: StageInput | CondenseContext) -> str:
        return stable_hash([run.dataset.fingerprint, run.backbone.id, run.protocol.id, run.seed, condenser.config.epochs,
                            HISTORY.number, *([] if condenser.config.lr is None else [condenser.config.lr])])

    def build(self, condenser: Forgetting, ctx: CondenseContext) -> torch.Tensor:
        return condenser.history(ctx)
