"""`tm-lora`: trajectory matching of LoRA adapters + projection heads (the paper's ViT/CLIP setting).

The image encoder keeps its frozen pretrained weights; experts record, and students match, only
the adapters and the heads: far fewer parameters to store and match, and a better-conditioned
problem than matching a whole encoder.
"""
from __future__ import annotations

from vlbench.tm import TM_ENGINE, TMCondenser
from vlbench.versions import CodeVersion


class LoRATrajectoryMatching(TMCondenser):
    name = "tm-lora"
    matches = "lora"
    code_version = CodeVersion("condenser:tm-lora", 1, ("vlbench_plugins.tm_lora", *TM_ENGINE))
