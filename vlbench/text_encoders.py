"""Frozen text encoders of the paper's backbones: BERT's CLS token and an open_clip text tower.

Their outputs are computed once per data set and cached (`vlbench.pairs.text_features`) under
the encoder's `id`, so the id changes whenever the weights may have: local checkpoints count by
their files' names, sizes and modification times.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from vlbench.api import TextEncoder, VLBenchError, stable_hash


def encode_device() -> torch.device:
    """Text is encoded once per data set: on the GPU when there is one (BERT on 145k captions)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def weights_id(prefix: str, *sources: str | None) -> str:
    """A file-name-safe id for weights named by hub names, tags or local paths (None: random weights)."""
    parts = []
    for source in sources:
        path = Path(source.removeprefix("local-dir:")).expanduser() if source else None
        stamp = None
        if path is not None and path.exists():
            files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
            stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        parts.append([source, stamp])
    return f"{prefix}-{stable_hash(parts, 10)}"


def _batches(captions: list[str], batch_size: int, progress: bool, desc: str):
    starts = range(0, len(captions), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) < 2):
        yield captions[start:start + batch_size]


class BertCLSEncoder(TextEncoder):
    """A frozen BERT (hub name or local directory, through transformers); the sentence is its CLS token."""

    def __init__(self, model: str):
        self.model_name = model
        self.id = weights_id("bert-cls", model)
        self._dim: int | None = None
        self._loaded: tuple | None = None

    def _from_pretrained(self, cls):
        try:
            return cls.from_pretrained(self.model_name)
        except (OSError, ValueError) as e:  # ValueError: not a valid hub name either
            raise VLBenchError(
                f"cannot load text model {self.model_name!r} ({str(e).splitlines()[0]}): run once online to cache it, "
                "or set the backbone option text_model to a local directory holding it"
            ) from None

    @property
    def dim(self) -> int:
        if self._dim is None:
            from transformers import AutoConfig

            self._dim = self._from_pretrained(AutoConfig).hidden_size
        return self._dim

    def _load(self):
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            model = self._from_pretrained(AutoModel).eval().to(encode_device())
            self._loaded = self._from_pretrained(AutoTokenizer), model
        return self._loaded

    @torch.no_grad()
    def encode(self, captions: list[str], batch_size: int = 256, progress: bool = True) -> Tensor:
        tokenizer, model = self._load()
        out = []
        for batch in _batches(captions, batch_size, progress, "BERT"):
            tokens = tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(model.device)
            out.append(model(**tokens).last_hidden_state[:, 0].float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)


class OpenCLIPTextEncoder(TextEncoder):
    """A frozen open_clip text tower: the text feature is its output embedding (`encode_text`, not normalised)."""

    def __init__(self, model: nn.Module, tokenizer, dim: int, id: str):
        self.model, self.tokenizer, self.dim, self.id = model.eval(), tokenizer, dim, id

    @torch.no_grad()
    def encode(self, captions: list[str], batch_size: int = 256, progress: bool = True) -> Tensor:
        device = encode_device()
        self.model.to(device)
        out = [self.model.encode_text(self.tokenizer(batch).to(device)).float().cpu()
               for batch in _batches(captions, batch_size, progress, "CLIP text")]
        return torch.cat(out) if out else torch.empty(0, self.dim)
