"""A LoRA forward with the adapters' scale folded into B: the same numbers as peft's, faster."""
from __future__ import annotations

import copy
import math
import sys

import torch.nn.functional as F
from torch import Tensor, nn


class FoldedLoRALinear(nn.Module):
    """A peft LoRA Linear that computes base(x) + x A^T (s B)^T instead of peft's base(x) + (x A^T B^T) s.

    Bit for bit the same numbers when the scale s is a power of two (the default lora_alpha / rank = 2):
    scaling by a power of two is exact in binary floating point, before or after a sum (short of
    overflow and subnormals), in the forward, the backward and the double backward alike. The scale
    then multiplies B (out x rank) instead of the layer's output (tokens x out): full-size multiplies
    fewer per layer and inner step in the forward, the backward and the double backward
    (docs/benchmarks.md, "Where a tm-lora iteration spends its time", has the speed-up).
    Holds the same submodules under the same names, so the same parameter names address it.
    """

    def __init__(self, layer: nn.Module, adapter: str):
        super().__init__()
        self.base_layer, self.lora_A, self.lora_B = layer.base_layer, layer.lora_A, layer.lora_B
        self.adapter, self.scale = adapter, layer.scaling[adapter]

    def forward(self, x: Tensor) -> Tensor:
        down, up = self.lora_A[self.adapter].weight, self.lora_B[self.adapter].weight
        return self.base_layer(x) + F.linear(F.linear(x, down), up * self.scale)


def with_folded_lora_scale(model: nn.Module) -> nn.Module:
    """A copy of `model` with every plain peft LoRA Linear whose scale is a power of two replaced by
    `FoldedLoRALinear` (`model` itself when there is none)."""
    if "peft" not in sys.modules:  # a model with peft layers imported peft to build them
        return model
    from peft.tuners.lora.layer import Linear as LoRALinear

    def foldable(layer: nn.Module) -> bool:  # one plain adapter: no dropout, bias, DoRA-like variant or merge
        if (not isinstance(layer, LoRALinear) or len(layer.active_adapters) != 1 or layer.merged
                or layer.disable_adapters):
            return False
        adapter = layer.active_adapters[0]
        variant = adapter in getattr(layer, "lora_variant", {}) or layer.use_dora.get(adapter, False)  # peft < 0.15: use_dora
        return (not variant and adapter in layer.lora_A and isinstance(layer.base_layer, nn.Linear)
                and not layer.fan_in_fan_out
                and isinstance(layer.lora_dropout[adapter], nn.Identity) and layer.lora_A[adapter].bias is None
                and layer.lora_B[adapter].bias is None and math.frexp(layer.scaling[adapter])[0] == 0.5)

    names = [name for name, layer in model.named_modules() if foldable(layer)]
    if not names:
        return model
    # a copy of the modules only: it shares the model's tensors (functional_call replaces them anyway)
    folded = copy.deepcopy(model, memo={id(t): t for t in [*model.parameters(), *model.buffers()]})
    for name in names:
        parent, _, child = name.rpartition(".")
        layer = folded.get_submodule(name)
        setattr(folded.get_submodule(parent), child, FoldedLoRALinear(layer, layer.active_adapters[0]))
    return folded
