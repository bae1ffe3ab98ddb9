"""`full`: the whole training set, the reference that recovery ratios are measured against.

Nothing is condensed: the runner trains evaluation models on the training pairs themselves
(`trains_on_full_data`) with the protocol's optimiser, for `epochs` passes over the data rather
than the protocol's fixed step count, so that the reference is a converged model. The epoch
count is chosen on the validation split (configs/tuning/full-epochs.yaml, docs/protocol.md).
"""
import math
from dataclasses import dataclass

from vlbench.api import CondensedSet, CondenseContext, Condenser, TrainProtocol, VLBenchError


@dataclass
class FullDataConfig:
    epochs: float = 8.0  # passes over the training pairs; chosen on val (docs/protocol.md)

    def __post_init__(self):
        if not self.epochs > 0:
            raise VLBenchError(f"full: epochs must be positive, got {self.epochs}")


class FullData(Condenser):
    name = "full"
    Config = FullDataConfig
    trains_on_full_data = True

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        raise TypeError("`full` is not condensed: the runner trains on the training pairs directly")

    def evaluation_steps(self, num_pairs: int, protocol: TrainProtocol) -> int:
        steps_per_epoch = math.ceil(num_pairs / min(protocol.batch_size, num_pairs))  # as train() counts epochs
        return math.ceil(self.config.epochs * steps_per_epoch)
