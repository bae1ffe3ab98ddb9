"""`random`: uniformly sampled training pairs, without replacement, seeded (`vlbench.coreset.random_pairs`)."""
from vlbench.api import CondensedSet, CondenseContext, Condenser
from vlbench.coreset import random_pairs
from vlbench.versions import CodeVersion


class RandomPairs(Condenser):
    name = "random"
    code_version = CodeVersion("condenser:random", 1, ("vlbench_plugins.random_subset", "vlbench.coreset"))

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        return CondensedSet.from_indices(ctx.train, random_pairs(ctx).tolist(), condenser=self.name)
