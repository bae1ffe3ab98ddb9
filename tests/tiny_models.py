"""Small local stand-ins for hub models, written by tests: nothing is downloaded."""
from __future__ import annotations

import json
from pathlib import Path

import torch

#: Every word the tests' captions use, so that the tiny BERT tokenizer knows them all.
WORDS = "a the photo of red green blue dog cat car tree on in with two small big".split()


def write_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 1-layer, 16-d BERT with random weights and a word-level vocabulary, saved like a hub checkpoint."""
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizer(vocab=vocab).save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    return Path(directory)


def write_tiny_clip(directory: Path) -> Path:
    """An open_clip `local-dir:` model: a 2-block ViT on 32 px images, 32-d embeddings, no weights file."""
    config = {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
        },
        "preprocess_cfg": {},
    }
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / "open_clip_config.json").write_text(json.dumps(config))
    return Path(directory)
