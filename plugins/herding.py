"""`herding`: pairs picked so that their mean joint embedding tracks the mean of all pairs."""
from vlbench.api import CondensedSet, CondenseContext, Condenser
from vlbench.coreset import herding, reference_features
from vlbench.versions import CodeVersion


class Herding(Condenser):
    name = "herding"
    code_version = CodeVersion("condenser:herding", 1, ("vlbench_plugins.herding", "vlbench.coreset"))
    requires = frozenset({"reference_model"})

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        picked = herding(reference_features(ctx), ctx.budget)
        return CondensedSet.from_indices(ctx.train, picked.tolist(), condenser=self.name)
