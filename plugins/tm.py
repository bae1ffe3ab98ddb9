"""`tm`: trajectory matching of every trainable parameter (the paper's NFNet setting).

The engine (`vlbench.tm.TMCondenser`) builds or reuses the expert buffer, initialises the synthetic
set from real pairs, distils it and returns it with the learned learning rates; this plugin names it.
`tm-lora` (plugins/tm_lora.py) differs only in what is matched: LoRA adapters + heads.
"""
from __future__ import annotations

from vlbench.tm import TM_ENGINE, TMCondenser, TMConfig
from vlbench.versions import CodeVersion

__all__ = ["TMConfig", "TrajectoryMatching"]


class TrajectoryMatching(TMCondenser):
    name = "tm"
    matches = "all"
    code_version = CodeVersion("condenser:tm", 1, ("vlbench_plugins.tm", *TM_ENGINE))
