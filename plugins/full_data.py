"""`full`: the whole training set, the reference that recovery ratios are measured against.

Nothing is condensed: the runner trains evaluation models on the training pairs themselves
(`trains_on_full_data`) with the protocol's optimiser (SGD, momentum, weight decay, batch), for
`epochs` passes over the data rather than the protocol's fixed step count, so that the reference
is a converged model; at `lr` when given, because a long run at the short protocol's lr can
collapse. Both are chosen on the validation split (scripts/tune_full_epochs.py, docs/protocol.md).
"""
import dataclasses
import math
from dataclasses import dataclass

from vlbench.api import CondensedSet, CondenseContext, Condenser, TrainProtocol, VLBenchError, option
from vlbench.core import FULL_DATA_LR


@dataclass
class FullDataConfig:
    epochs: float = option(8.0, "passes over the training pairs; chosen on val (docs/protocol.md)")
    lr: float | None = option(FULL_DATA_LR, "learning rate; null: the protocol's; chosen on val (docs/protocol.md)")

    def __post_init__(self):
        if not self.epochs > 0 or (self.lr is not None and not self.lr > 0):
            raise VLBenchError(f"full: epochs and lr must be positive, got epochs={self.epochs}, lr={self.lr}")


class FullData(Condenser):
    name = "full"
    Config = FullDataConfig
    trains_on_full_data = True

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        raise TypeError("`full` is not condensed: the runner trains on the training pairs directly")

    def evaluation_protocol(self, num_pairs: int, protocol: TrainProtocol) -> TrainProtocol:
        steps_per_epoch = math.ceil(num_pairs / min(protocol.batch_size, num_pairs))  # as train() counts epochs
        return dataclasses.replace(protocol, steps=math.ceil(self.config.epochs * steps_per_epoch),
                                   lr=protocol.lr if self.config.lr is None else self.config.lr)
