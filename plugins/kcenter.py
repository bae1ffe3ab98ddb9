"""`kcenter`: greedy k-center (farthest-first) pairs in the joint embedding space."""
from vlbench.api import CondensedSet, CondenseContext, Condenser
from vlbench.coreset import kcenter_greedy, reference_features


class KCenter(Condenser):
    name = "kcenter"
    requires = frozenset({"reference_model"})

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        picked = kcenter_greedy(reference_features(ctx), ctx.budget, ctx.seed)
        return CondensedSet.from_indices(ctx.train, picked.tolist(), condenser=self.name)
