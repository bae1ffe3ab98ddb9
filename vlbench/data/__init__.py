"""Data: Karpathy-format reading, image decoding, and the embedded synthscenes generator."""
from vlbench.data.images import denormalize, load_images
from vlbench.data.karpathy import Entry, build_dataset, clean_caption, read_karpathy

__all__ = ["Entry", "build_dataset", "clean_caption", "denormalize", "load_images", "read_karpathy"]
