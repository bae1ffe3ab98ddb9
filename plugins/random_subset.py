"""`random`: uniformly sampled training pairs, without replacement, seeded."""
import torch

from vlbench.api import CondensedSet, CondenseContext, Condenser
from vlbench.coreset import check_budget
from vlbench.versions import CodeVersion


class RandomPairs(Condenser):
    name = "random"
    code_version = CodeVersion("condenser:random", 1, ("vlbench_plugins.random_subset",))

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        check_budget(ctx.budget, len(ctx.train))
        generator = torch.Generator().manual_seed(ctx.seed)
        picked = torch.randperm(len(ctx.train), generator=generator)[: ctx.budget]
        return CondensedSet.from_indices(ctx.train, picked.tolist(), condenser=self.name)
