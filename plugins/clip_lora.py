"""`clip`: an open_clip model; LoRA adapters on its image tower, its text tower frozen.

The image tower's output embedding is the joint space. Its weights stay frozen and peft LoRA
adapters on the attention (`attn`, an nn.MultiheadAttention: in_proj and out_proj) and MLP
(`c_fc`, `c_proj`) layers are its only trainable parameters (`lora_rank: 0` fine-tunes the
whole tower instead). The frozen text tower's output embedding is the text feature, and a
projection head maps it into the joint space. Towers built on timm (open_clip's `timm_model_name`
configs) name their layers `qkv`, `attn.proj`, `fc1`, `fc2`: set `lora_targets` to match.

peft runs an adapted nn.MultiheadAttention by adding the adapter into the frozen in_proj weight
for each forward and subtracting it afterwards, so that weight moves by float rounding (about
1e-8 over 50 steps): harmless, but not bit-for-bit frozen.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import peft
import torch

from vlbench.api import Backbone, TextEncoder, VLBenchError, VLModel, option
from vlbench.modules import DualEncoder
from vlbench.text_encoders import OpenCLIPTextEncoder, weights_id

@dataclass
class CLIPConfig:
    model: str = option("ViT-B-32", "an open_clip model name, hf-hub:ORG/REPO or local-dir:PATH")
    pretrained: str | None = option("openai", "a tag (open_clip.list_pretrained()), a checkpoint path, or null: random "
                                              "weights")
    lora_rank: int = option(4, "rank of the LoRA adapters on the image tower; 0 trains the whole tower")
    lora_alpha: int = option(8, "LoRA scaling numerator (the adapters' output is scaled by lora_alpha / lora_rank)")
    lora_targets: list[str] = option(["attn", "c_fc", "c_proj"], "image-tower modules that get LoRA adapters")
    dropout: float = option(0.0, "dropout in the text projection head")

    def __post_init__(self):
        if self.lora_rank < 0:
            raise VLBenchError(f"clip: lora_rank must be >= 0, got {self.lora_rank}")


class CLIPLoRA(Backbone):
    name = "clip"
    Config = CLIPConfig
    lora_option = "lora_rank"

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._clip: torch.nn.Module | None = None  # both towers; every build starts from its image tower
        self._text_encoder: TextEncoder | None = None

    def prepare(self) -> None:
        if self._clip is not None:
            return
        import open_clip

        name, pretrained = self.config.model, self.config.pretrained
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random weights (pretrained: null) are the same in every process
                self._clip = open_clip.create_model(name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(name)
        except (OSError, RuntimeError, ValueError) as e:
            raise VLBenchError(
                f"cannot create open_clip model {name!r} with pretrained={pretrained!r} ({str(e).splitlines()[0]}): "
                "run once online to cache the weights, pass a local checkpoint path, or null for random weights"
            ) from None
        self._text_encoder = OpenCLIPTextEncoder(self._clip, tokenizer, self.embed_dim,
                                                 weights_id("open_clip", name, pretrained))

    @property
    def text_encoder(self) -> TextEncoder:
        self.prepare()
        return self._text_encoder

    @property
    def embed_dim(self) -> int:
        self.prepare()
        return self._clip.visual.output_dim

    @property
    def image_size(self) -> int:
        self.prepare()
        height, width = self._clip.visual.preprocess_cfg["size"]
        if height != width:
            raise VLBenchError(f"open_clip model {self.config.model!r} takes {height}x{width} images; vlbench needs square ones")
        return height

    @property
    def normalization(self):
        self.prepare()
        cfg = self._clip.visual.preprocess_cfg
        return tuple(cfg["mean"]), tuple(cfg["std"])

    def lora_config(self) -> peft.LoraConfig | None:
        o = self.config
        if o.lora_rank <= 0:
            return None
        return peft.LoraConfig(r=o.lora_rank, lora_alpha=o.lora_alpha, target_modules=o.lora_targets,
                               lora_dropout=0.0)

    def build(self, seed: int, device: torch.device | str = "cpu") -> VLModel:
        self.prepare()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            visual = copy.deepcopy(self._clip.visual)
            config = self.lora_config()
            if config is not None:
                try:
                    visual = peft.inject_adapter_in_model(config, visual)  # freezes every non-adapter weight
                except ValueError as e:
                    raise VLBenchError(f"lora_targets {config.target_modules} do not fit the image tower of "
                                       f"{self.config.model!r}: {str(e).splitlines()[0]}") from None
            dim = self.embed_dim
            model = DualEncoder(visual, dim, dim, dim, self.config.dropout, image_head=False)
        return model.to(device)
