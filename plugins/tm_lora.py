"""`tm-lora`: trajectory matching of LoRA adapters + projection heads (the paper's ViT/CLIP setting).

The image encoder keeps its frozen pretrained weights; experts record, and students match, only
the adapters and the heads: far fewer parameters to store and match, and a better-conditioned
problem than matching a whole encoder.
"""
from __future__ import annotations

from vlbench.api import Backbone, VLBenchError, VLModel
from vlbench_plugins.tm import TrajectoryMatching


class LoRATrajectoryMatching(TrajectoryMatching):
    name = "tm-lora"

    def variant(self, backbone: Backbone) -> Backbone:
        return backbone

    def check_model(self, model: VLModel) -> None:
        if not model.lora_parameter_names():
            raise VLBenchError("tm-lora needs a backbone with LoRA adapters (lora_rank > 0); use `tm` to match all parameters")
