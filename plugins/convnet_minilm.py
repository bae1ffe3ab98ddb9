"""`convnet-minilm` and `convnetw32-minilm`: the ConvNet of the MTT line of work + the same frozen MiniLM
text side and heads.

Image side: MTT's standard ConvNet (GeorgeCazenavette/mtt-distillation, networks.py `ConvNet` with
utils.py `get_default_convnet_setting`: width 128, depth 3, 'relu', 'instancenorm', 'avgpooling'),
at 32 px as there (ConvNetD4 is its 64 px twin: `depth: 4, image_size: 64`). Each block is a 3x3
convolution (padding 1), GroupNorm(width, width, affine) — what MTT calls instance norm — ReLU
and a 2x2 average pool; the final map is flattened (128 x 4 x 4 = 2048 features, MTT's embedding)
into the image projection head. MTT's classifier is not used.

Everything else is `tinyvit-minilm`'s (EmbeddedBackbone), so that the two differ in the image
architecture alone: pretrained once on the generator's `pretrain` split (per-cell attributes, the
final map pooled to the 3x3 grid), shipped in plugins/weights/, kept frozen under rank-4 LoRA
adapters on every convolution (peft's Conv2d LoRA: a k x k down- and a 1 x 1 up-projection), so
`tm-lora` adapts the convolutions and `tm` (`lora_rank: 0`) all of them. Images are normalised
with the `pretrain` split's channel statistics, as MTT normalises each data set with its own.

`convnetw32-minilm` is the same network at width 32: DC's and MTT's ConvNetW32 (the width ablation of
Zhao, Mopuri & Bilen's DC). Its evaluation model costs about 1.5x the tiny ViT's on a CPU where width
128 costs about 10x (benchmarks/test_eval_model_cost.py), so it is the CPU board's second architecture;
width 128 stays `convnet-minilm`, the paper-sized option for GPUs. Its own checkpoint (pretrained on
the `pretrain` split the same way) ships beside the width-128 one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlbench.api import VLBenchError, option
from vlbench_plugins.tinyvit_minilm import EmbeddedBackbone, EmbeddedConfig


@dataclass
class ConvNetConfig(EmbeddedConfig):
    image_size: int = option(32, "input side in pixels")
    width: int = option(128, "channels of every block")
    depth: int = option(3, "conv-norm-relu-pool blocks (each halves the side)")
    lora_targets: list[str] = option(["conv"], "modules that get LoRA adapters")

    def __post_init__(self):
        super().__post_init__()
        if self.image_size >> self.depth < 1:
            raise VLBenchError(f"convnet-minilm: image_size {self.image_size} is too small for depth {self.depth} "
                               "(each block halves it)")


# Channel mean and std of the synthscenes `pretrain` split at 32 px (10000 images).
MEAN = (0.1271, 0.1228, 0.1181)
STD = (0.1462, 0.1225, 0.1293)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(width, width, affine=True)  # MTT's 'instancenorm'
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class ConvNet(nn.Module):
    """MTT's ConvNet without its classifier: `depth` blocks; `forward` gives the final feature map."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.blocks = nn.Sequential(*(ConvBlock(3 if d == 0 else width, width) for d in range(depth)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.blocks(pixels)


class Flattened(nn.Module):
    def __init__(self, convnet: nn.Module):
        super().__init__()
        self.convnet = convnet

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.convnet(pixels).flatten(1)


class ConvNetMiniLM(EmbeddedBackbone):
    name = "convnet-minilm"
    Config = ConvNetConfig
    normalization_stats = (MEAN, STD)
    arch_options = ("image_size", "width", "depth")
    checkpoint_prefix = "convnet"

    @property
    def side(self) -> int:
        """The final feature map's side (each block's pool halves it, rounding down as MTT's does)."""
        return self.config.image_size >> self.config.depth

    def encoder(self) -> ConvNet:
        return ConvNet(self.config.width, self.config.depth)

    def features(self, encoder: nn.Module) -> tuple[nn.Module, int]:
        return Flattened(encoder), self.config.width * self.side**2

    def cells(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(encoder(pixels), 3).flatten(2).transpose(1, 2)


@dataclass
class ConvNetW32Config(ConvNetConfig):
    width: int = option(32, "channels of every block (128: MTT's, which is `convnet-minilm`)")


class ConvNetW32MiniLM(ConvNetMiniLM):
    """A name of its own rather than a new default of `convnet-minilm`: that id (and every key made
    with it) keeps meaning width 128. The checkpoint prefix is shared: one architecture, one file."""

    name = "convnetw32-minilm"
    Config = ConvNetW32Config
