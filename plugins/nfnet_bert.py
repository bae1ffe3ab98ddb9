"""`nfnet-bert`, the paper's backbone: timm nfnet_l0 (trainable) + frozen bert-base-uncased (CLS token).

As in the official code (princetonvisualai/multimodal_dataset_distillation, networks.py,
CLIPModel_full with its default `use_image_project = False`), the image encoder's pooled features
(nfnet_l0: 2304-d) are the joint space, and one projection head (Linear-GELU-Linear-Dropout 0.1 +
residual + LayerNorm) maps BERT's 768-d CLS embedding into it. Images are normalised with the
image encoder's own statistics (ImageNet's for nfnet_l0); option `normalization: clip` uses the
CLIP statistics the official code applies to NFNet.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlbench.api import Backbone, TextEncoder, VLBenchError, VLModel, option
from vlbench.modules import DualEncoder
from vlbench.text_encoders import BertCLSEncoder

@dataclass
class NFNetBERTConfig:
    image_model: str = option("nfnet_l0", "a timm model name")
    pretrained: str | None = option("imagenet", "imagenet: timm's pretrained weights (from its cache, downloaded when "
                                                "online); a checkpoint file path; null: random weights (seed 0)")
    image_size: int = option(224, "input side in pixels")
    text_model: str = option("bert-base-uncased", "a Hugging Face hub name or a local directory (frozen, CLS token)")
    dropout: float = option(0.1, "dropout in the projection heads (the official head's)")
    normalization: str = option("model", "model: the image model's own statistics; clip: the CLIP statistics the "
                                         "official code applies to every image encoder (docs/fidelity.md)")

    def __post_init__(self):
        if self.normalization not in ("model", "clip"):
            raise VLBenchError(f"normalization must be 'model' or 'clip', got {self.normalization!r}")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class NFNetBERT(Backbone):
    name = "nfnet-bert"
    Config = NFNetBERTConfig

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._template: nn.Module | None = None  # the image encoder every build starts from

    @functools.cached_property
    def text_encoder(self) -> TextEncoder:
        return BertCLSEncoder(self.config.text_model)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def normalization(self):
        import timm

        if self.config.normalization == "clip":
            return CLIP_MEAN, CLIP_STD
        cfg = timm.get_pretrained_cfg(self.config.image_model)
        return (cfg.mean, cfg.std) if cfg is not None else (IMAGENET_MEAN, IMAGENET_STD)

    def prepare(self) -> None:
        if self._template is not None:
            return
        import timm

        name, pretrained = self.config.image_model, self.config.pretrained
        kwargs: dict[str, Any] = {"pretrained": pretrained is not None, "num_classes": 0}  # pooled features
        if pretrained not in (None, "imagenet"):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise VLBenchError(f"pretrained checkpoint {path} not found; pass an existing file, `imagenet` or null")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._template = timm.create_model(name, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:
            source = "timm's cache or the Hugging Face hub" if pretrained == "imagenet" else pretrained
            raise VLBenchError(
                f"cannot create {name} with weights from {source} ({str(e).splitlines()[0]}): run once online to cache "
                "them, set `pretrained` to a local checkpoint file, or to null to start from random weights"
            ) from None

    def build(self, seed: int, device: torch.device | str = "cpu") -> VLModel:
        self.prepare()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = copy.deepcopy(self._template)
            dim = encoder.num_features
            model = DualEncoder(encoder, dim, self.text_encoder.dim, dim, self.config.dropout, image_head=False)
        return model.to(device)
