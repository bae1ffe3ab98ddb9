"""vlbench: a plugin-extensible benchmark suite for vision-language dataset condensation.

The public API a plugin may import is `__all__` below (names resolved lazily, so that importing
`vlbench` loads no torch) plus the modules listed in `PUBLIC_MODULES`; everything else is internal
and may change without notice. docs/plugins.md describes both.
"""
from importlib import import_module

from vlbench.provenance import import_hashes

import_hashes.install()  # first: every module imported from here on is hashed as it loads (records name that code)

from vlbench.hookspecs import hookimpl  # noqa: E402

__version__ = "0.1.0"

_CORE = ("VLBenchError", "RunSpec", "TrainProtocol", "cache_dir", "stable_hash", "derived_seed", "resolve_spec",
         "option")
_API = ("Condenser", "Backbone", "DatasetSource", "TextEncoder", "VLModel", "Pairs", "Split", "ImageTextDataset",
        "CondensedSet", "LowRankTargets", "CondenseContext")
#: Helpers a method needs whatever it does, by the module that holds them; search spaces for its options.
_HELPERS = {"random_pairs": "vlbench.coreset", "pixel_range": "vlbench.pixels",
            **{space: "vlbench.spaces" for space in ("LogUniform", "Uniform", "IntRange", "Choice")}}
__all__ = ["hookimpl", "__version__", *_CORE, *_API, *_HELPERS]
#: Shared engines and helpers that plugins build on (method code shared by several condensers).
PUBLIC_MODULES = ("vlbench.api", "vlbench.core", "vlbench.spaces", "vlbench.tm", "vlbench.coreset", "vlbench.modules",
                  "vlbench.text_encoders", "vlbench.pixels", "vlbench.storage", "vlbench.data", "vlbench.train",
                  "vlbench.testing", "vlbench.stages", "vlbench.artifacts", "vlbench.costs", "vlbench.versions",
                  # a plugin's own command resolves a run and builds its stages as the harness does
                  "vlbench.runner", "vlbench.condensing",
                  # progress bars for long work outside a condenser (a backbone's pretraining, a stage)
                  "vlbench.progress")


def __getattr__(name: str):
    if name in _CORE:
        return getattr(import_module("vlbench.core"), name)
    if name in _API:
        return getattr(import_module("vlbench.api"), name)
    if name in _HELPERS:
        return getattr(import_module(_HELPERS[name]), name)
    raise AttributeError(f"module 'vlbench' has no attribute {name!r}")
