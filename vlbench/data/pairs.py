"""Turn a split into model-ready `Pairs`: decoded images plus cached frozen text features."""
from __future__ import annotations

import logging

import torch

from vlbench.api import Backbone, ImageTextDataset, Pairs, cache_dir
from vlbench.data.bank import image_bank
from vlbench.data.images import load_images
from vlbench.artifacts import cached
from vlbench.storage import save_tensors
from vlbench.versions import CodeVersion

#: What makes cached text features (bump when they change; vlbench/versions.py).
TEXT_FEATURES = CodeVersion("text_features", 1, ("vlbench.data.pairs", "vlbench.text_encoders", "vlbench.modules"))
log = logging.getLogger(__name__)


def text_features(dataset: ImageTextDataset, split: str, backbone: Backbone) -> torch.Tensor:
    """Frozen text-encoder outputs for every caption of a split, computed once and cached."""
    from safetensors.torch import load_file

    encoder = backbone.text_encoder
    version = "".join(f"-v{n}" for n in TEXT_FEATURES.key())
    name = f"{dataset.name}-{dataset.fingerprint}-{split}-{encoder.id}{version}.safetensors"

    def encode() -> torch.Tensor:
        captions = dataset.split(split).pair_captions
        log.info(f"encoding {len(captions)} {split} captions with {encoder.id} (once; cached in {cache_dir() / 'text'})")
        return encoder.encode(captions)

    return cached("text", name, encode, lambda path: load_file(str(path))["features"],
                  lambda features, path: save_tensors({"features": features}, path))


def load_pairs(dataset: ImageTextDataset, split: str, backbone: Backbone) -> Pairs:
    data = dataset.split(split)
    mean, std = backbone.normalization
    if dataset.image_size is None:  # photos: a cached uint8 bank (Flickr30K would be 17 GB as float32)
        images = image_bank(dataset, split, backbone.image_size, mean, std)
    else:
        images = load_images(data.image_paths, backbone.image_size, mean, std)
    return Pairs(images, data.pair_image, text_features(dataset, split, backbone), data.pair_captions)
