"""Hook specifications: what a vlbench plugin can provide (entry-point group ``vlbench``)."""
import pluggy

hookspec = pluggy.HookspecMarker("vlbench")
hookimpl = pluggy.HookimplMarker("vlbench")


@hookspec
def register_condensers(register):
    """Register Condenser subclasses: ``register(MyCondenser)``."""


@hookspec
def register_backbones(register):
    """Register Backbone subclasses: ``register(MyBackbone)``."""


@hookspec
def register_datasets(register):
    """Register DatasetSource subclasses: ``register(MyDataset)``."""
