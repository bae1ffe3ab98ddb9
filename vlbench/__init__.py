"""vlbench: a plugin-extensible benchmark suite for vision-language dataset condensation."""
from vlbench.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
