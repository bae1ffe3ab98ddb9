"""Building blocks shared by backbones: the projection head, the dual encoder, frozen text encoders."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlbench.api import TextEncoder, VLModel


class ProjectionHead(nn.Module):
    """Linear-GELU-Linear-Dropout with a residual and LayerNorm (the paper's head)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        projected = self.proj(x)
        return self.norm(projected + self.dropout(self.fc(F.gelu(projected))))


class DualEncoder(VLModel):
    """An image encoder plus heads on both sides; the text side starts from frozen embeddings.

    `image_encoder(pixels)` must return (B, image_dim) features. Trainable parameters are those
    with requires_grad (a LoRA backbone freezes its base weights before handing the encoder in).
    `image_head=False` makes the image features the joint space and projects only the text (the
    paper's official model; embed_dim must then equal image_dim).
    """

    def __init__(self, image_encoder: nn.Module, image_dim: int, text_dim: int, embed_dim: int, dropout: float = 0.0,
                 image_head: bool = True):
        super().__init__()
        if not image_head and embed_dim != image_dim:
            raise ValueError(f"without an image head the joint space is the {image_dim}-d image features, not {embed_dim}-d")
        self.image_encoder = image_encoder
        self.image_head = ProjectionHead(image_dim, embed_dim, dropout) if image_head else nn.Identity()
        self.text_head = ProjectionHead(text_dim, embed_dim, dropout)

    def encode_image(self, pixels: Tensor) -> Tensor:
        return F.normalize(self.image_head(self.image_encoder(pixels)), dim=-1)

    def encode_text(self, text_features: Tensor) -> Tensor:
        return F.normalize(self.text_head(text_features), dim=-1)


class SentenceTransformerEncoder(TextEncoder):
    """A frozen sentence-transformers model (mean pooling as the model defines it), from a local path."""

    def __init__(self, path: str | Path, dim: int, id: str):
        self.path, self.dim, self.id = str(path), dim, id
        self._model = None

    def __getstate__(self) -> dict:
        """It travels to worker processes (inside a backbone) as its path: a loaded model stays behind."""
        return {**self.__dict__, "_model": None}

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from vlbench.text_encoders import without_their_bars

            without_their_bars()
            self._model = SentenceTransformer(self.path, device="cpu", local_files_only=True)
        return self._model

    def weight_files(self) -> dict[str, Path]:
        root = Path(self.path)
        return {str(f.relative_to(root)): f for f in sorted(root.rglob("*.safetensors"))}

    # 128 captions a batch: the fastest on a CPU at synthscenes' ~19 tokens (docs/benchmarks.md).
    def encode(self, captions: list[str], batch_size: int = 128) -> Tensor:
        from vlbench.text_encoders import encode_by_length, encode_workers

        model = self._load()  # the model's own tokenisation, modules and pooling, batched without padding
        return encode_by_length(
            captions,
            lambda texts: [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]],
            model.preprocess, lambda features: model(features)["sentence_embedding"], self.dim, batch_size, self.id,
            workers=encode_workers(),
        )

    def train_mode_encode(self, captions: list[str], device: torch.device) -> Tensor:
        from vlbench.text_encoders import train_mode

        model = self._load()
        features = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in model.preprocess(captions).items()}
        with train_mode(model.to(device)):
            return model(features)["sentence_embedding"].float()
