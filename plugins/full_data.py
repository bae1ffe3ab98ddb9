"""`full`: the whole training set, the reference that recovery ratios are measured against.

Nothing is condensed: the runner trains evaluation models on the training pairs themselves
(`trains_on_full_data`), with the same protocol as every condensed set.
"""
from vlbench import hookimpl
from vlbench.api import CondensedSet, CondenseContext, Condenser


class FullData(Condenser):
    name = "full"
    trains_on_full_data = True

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        raise TypeError("`full` is not condensed: the runner trains on the training pairs directly")


@hookimpl
def register_condensers(register):
    register(FullData)
