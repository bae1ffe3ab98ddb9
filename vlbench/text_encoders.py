"""Frozen text encoders of the paper's backbones: BERT's CLS token and an open_clip text tower.

Their outputs are computed once per data set and cached (`vlbench.data.pairs.text_features`) under
the encoder's `id`, so the id changes whenever the weights may have: local checkpoints count by
their files' names, sizes and modification times.

`encode_by_length` is the fast path of the transformer encoders (BERT, sentence-transformers):
each distinct caption once, batches of captions with the same token count (no padding), several
single-threaded batches at a time. It changes no number beyond float rounding
(tests/test_text_encoding.py), so the encoders' ids, and the features cached under them, stay.
"""
from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlbench.api import TextEncoder, VLBenchError, stable_hash
from vlbench.parallel import jobs, one_thread
from vlbench.progress import bar, track


def without_their_bars() -> None:
    """Switch transformers' own tqdm bars off ("Loading weights"): vlbench's reporter shows the work, and a
    tqdm bar would write carriage returns into a log."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


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


def encode_workers() -> int:
    """How many batches are encoded at once: one per core of the command (vlbench/parallel.py), or
    VLBENCH_ENCODE_WORKERS."""
    value = os.environ.get("VLBENCH_ENCODE_WORKERS")
    if value is None:
        return jobs()
    if not value.isdigit() or int(value) < 1:
        raise VLBenchError(f"VLBENCH_ENCODE_WORKERS must be a positive integer, not {value!r}")
    return int(value)


def encode_by_length(captions: list[str], token_counts: Callable[[list[str]], list[int]],
                     prepare: Callable[[list[str]], Any], forward: Callable[[Any], Tensor], dim: int,
                     batch_size: int, desc: str, workers: int = 1) -> Tensor:
    """(len(captions), dim) float32 CPU features: `forward(prepare(batch))` over batches of distinct captions.

    A batch holds captions of one token count (`token_counts`), so nothing is padded: the
    transformer's work is its real tokens, and no batch waits for its longest caption. Up to
    `workers` batches run at once, each on one thread (torch's ops release the GIL); one-thread
    batches cannot lose time to thread synchronisation on a busy machine, and the features do not
    depend on the worker count. `prepare` (tokenisation) stays in the calling thread: fast
    tokenizers are not safe to share between threads.
    """
    unique = list(dict.fromkeys(captions))
    if not unique:  # tokenizers refuse an empty list
        return torch.empty(0, dim)
    counts = token_counts(unique)
    order = sorted(range(len(unique)), key=counts.__getitem__)
    batches = []
    for _, same_count in groupby(order, key=counts.__getitem__):
        group = list(same_count)
        batches += [group[start:start + batch_size] for start in range(0, len(group), batch_size)]
    out = torch.empty(len(unique), dim)

    def encode(inputs) -> Tensor:
        with torch.inference_mode():
            return forward(inputs).float().cpu()

    # one thread, set globally: the workers' ops run inline, each in its own thread
    with one_thread(), ThreadPoolExecutor(workers) as pool, \
            bar(len(unique), desc, "caption") as encoded:
        pending: deque = deque()

        def collect():
            index, future = pending.popleft()
            out[index] = future.result()
            encoded.update(len(index))

        for index in batches:  # at most 2 batches per worker prepared ahead: bounded memory
            pending.append((index, pool.submit(encode, prepare([unique[i] for i in index]))))
            if len(pending) > 2 * workers:
                collect()
        while pending:
            collect()
    position = {caption: i for i, caption in enumerate(unique)}
    return out[[position[caption] for caption in captions]]


@contextlib.contextmanager
def train_mode(module: nn.Module):
    """`module` in train mode (dropout on), without gradients; back in eval mode after, so that the features
    `encode` caches stay eval-mode ones."""
    module.train()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.eval()


def _batches(captions: list[str], batch_size: int, desc: str):
    starts = range(0, len(captions), batch_size)
    for start in track(starts, len(starts), desc, "batch"):
        yield captions[start:start + batch_size]


class BertCLSEncoder(TextEncoder):
    """A frozen BERT (hub name or local directory, through transformers); the sentence is its CLS token."""

    def __init__(self, model: str):
        self.model_name = model
        self.id = weights_id("bert-cls", model)
        self._dim: int | None = None
        self._loaded: tuple | None = None

    def _from_pretrained(self, cls):
        without_their_bars()
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

    def encode(self, captions: list[str], batch_size: int = 256) -> Tensor:
        tokenizer, model = self._load()
        return encode_by_length(
            captions, lambda texts: [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]],
            lambda batch: tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(model.device),
            lambda tokens: model(**tokens).last_hidden_state[:, 0], self.dim, batch_size, "BERT",
            workers=1 if model.device.type == "cuda" else encode_workers(),
        )

    def train_mode_encode(self, captions: list[str], device: torch.device) -> Tensor:
        tokenizer, model = self._load()
        tokens = tokenizer(captions, padding=True, truncation=True, return_tensors="pt").to(device)
        with train_mode(model.to(device)):
            return model(**tokens).last_hidden_state[:, 0].float()


class OpenCLIPTextEncoder(TextEncoder):
    """A frozen open_clip text tower: the text feature is its output embedding (`encode_text`, not normalised)."""

    def __init__(self, model: nn.Module, tokenizer, dim: int, id: str):
        self.model, self.tokenizer, self.dim, self.id = model.eval(), tokenizer, dim, id

    @torch.no_grad()
    def encode(self, captions: list[str], batch_size: int = 256) -> Tensor:
        device = encode_device()
        self.model.to(device)
        out = [self.model.encode_text(self.tokenizer(batch).to(device)).float().cpu()
               for batch in _batches(captions, batch_size, "CLIP text")]
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def train_mode_encode(self, captions: list[str], device: torch.device) -> Tensor:
        with train_mode(self.model.to(device)):
            return self.model.encode_text(self.tokenizer(captions).to(device)).float()
