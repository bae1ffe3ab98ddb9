"""Hook specifications: what a vlbench plugin can provide (entry-point group ``vlbench``).

Each hook gets a ``register`` callback that takes a class, or the class's import path and the
name it registers: ``register("pkg.module:MyCondenser", name="mine")`` imports ``pkg.module``
only when ``mine`` is used, so that listing plugins stays fast (docs/plugins.md).
"""
import pluggy

hookspec = pluggy.HookspecMarker("vlbench")
hookimpl = pluggy.HookimplMarker("vlbench")


@hookspec
def register_condensers(register):
    """Register Condenser subclasses: ``register(MyCondenser)`` or ``register("module:MyCondenser", name=...)``."""


@hookspec
def register_backbones(register):
    """Register Backbone subclasses: ``register(MyBackbone)`` or ``register("module:MyBackbone", name=...)``."""


@hookspec
def register_datasets(register):
    """Register DatasetSource subclasses: ``register(MyDataset)`` or ``register("module:MyDataset", name=...)``."""
