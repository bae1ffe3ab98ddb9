"""Hook specifications: what a vlbench plugin can provide (entry-point group ``vlbench``).

Each ``register_*`` hook gets a ``register`` callback that takes a class, or the class's import
path and the name it registers: ``register("pkg.module:MyCondenser", name="mine")`` imports
``pkg.module`` only when ``mine`` is used, so that listing plugins stays fast (docs/plugins.md).
``register_commands`` gets the CLI's argparse subparsers, every time the CLI starts.
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


@hookspec
def register_stages(register):
    """Register shared stages (vlbench.stages.Stage subclasses) that condensers name in ``requires``."""


@hookspec
def register_commands(subparsers):
    """Add subcommands: ``subparsers.add_parser(...)``; import nothing heavy until the command runs."""
