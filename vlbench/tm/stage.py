"""The expert buffer as a declared shared stage, `expert_buffer` (named in `TMCondenser.requires`; the tm
plugin registers it, plugins/builtin.py).

A sweep builds each distinct buffer once, in its prepare phase, so that a job array of tm-lora
budgets trains the experts in one job instead of every job holding a device while it waits on the
buffer's lock. The buffer itself (directory, lock, resume, cost stamp) is `vlbench.tm.ExpertBuffer`;
which buffer a condenser matches (backbone variant, expert spec) is the condenser's own answer.
"""
from __future__ import annotations

from vlbench.api import Backbone, CondenseContext
from vlbench.core import stable_hash
from vlbench.stages import Stage, StageInput
from vlbench.tm.experts import EXPERT_BUFFER, ExpertBuffer


class ExpertBufferStage(Stage):
    name = "expert_buffer"
    code_version = EXPERT_BUFFER

    def key(self, condenser, run: StageInput | CondenseContext) -> str:
        buffer = ExpertBuffer.locate(run.dataset.fingerprint, condenser.variant(run.backbone).id, condenser.expert_spec(run))
        # One directory serves every number of experts and epochs (it extends): what is asked of it is in the key.
        return stable_hash([buffer.directory.name, condenser.config.num_experts, condenser.config.train_epochs])

    def build(self, condenser, ctx: CondenseContext) -> tuple[Backbone, list]:
        """(the backbone variant whose parameters the experts recorded, the trajectories)."""
        return condenser.experts(ctx)
