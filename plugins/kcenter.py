"""`kcenter`: greedy k-center (farthest-first) pairs in the joint embedding space."""
from vlbench.api import CondensedSet, CondenseContext, Condenser
from vlbench.coreset import kcenter_greedy, reference_features
from vlbench.versions import CodeVersion


class KCenter(Condenser):
    name = "kcenter"
    code_version = CodeVersion("condenser:kcenter", 1, ("vlbench_plugins.kcenter", "vlbench.coreset"))
    requires = frozenset({"reference_model"})

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        picked = kcenter_greedy(reference_features(ctx), ctx.budget, ctx.seed)
        return CondensedSet.from_indices(ctx.train, picked.tolist(), condenser=self.name)
