"""The unrolled inner loop and the normalised matching loss."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.autograd.profiler import record_function
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlbench.api import SIDES, VLBenchError, VLModel
from vlbench.tm.lora_fold import with_folded_lora_scale
from vlbench.train import batches, clip_loss

#: The inner loss of one batch: (image embeddings, text embeddings, temperature, the batch's indices
#: into the synthetic set) -> scalar. The indices let soft targets, weights or per-pair terms enter.
BatchLoss = Callable[[Tensor, Tensor, float, Tensor], Tensor]


def contrastive(image_emb: Tensor, text_emb: Tensor, temperature: float, indices: Tensor) -> Tensor:
    """The default inner loss: evaluation's `clip_loss` on the batch (indices unused)."""
    return clip_loss(image_emb, text_emb, temperature)


def matching_loss(student: list[Tensor], start: list[Tensor], target: list[Tensor], sides: list[str]) -> dict[str, Tensor]:
    """Per side: ||student - target||^2 / ||start - target||^2 (the normalised MTT loss)."""
    out = {}
    for side in SIDES:
        idx = [i for i, s in enumerate(sides) if s == side]
        if idx:
            num = sum(((student[i] - target[i]) ** 2).sum() for i in idx)
            den = sum(((start[i] - target[i]) ** 2).sum() for i in idx)
            out[side] = num / den.clamp_min(1e-12)
    return out


def sgd_step(params: list[Tensor], velocity: list[Tensor | None] | None, direction: list[Tensor | None],
             lr: list[Tensor | float], momentum: float) -> tuple[list[Tensor], list[Tensor | None]]:
    """torch.optim.SGD's update (dampening 0) given the direction gradient + weight decay * params;
    a None direction (a parameter outside the forward) leaves its parameter alone, as SGD does."""
    velocity = direction if velocity is None or momentum == 0 else [
        x if v is None or x is None else momentum * v + x for v, x in zip(velocity, direction)]
    return [p if v is None else p - l * v for p, l, v in zip(params, lr, velocity)], velocity


def inner_batches(num_pairs: int, batch_size: int, generator: torch.Generator, independent: bool) -> Iterator[Tensor]:
    """Batches walking through shuffled epochs of the set, or (`independent`) each a fresh random
    draw of `batch_size` pairs (the official inner loop's randperm(N)[:batch])."""
    return _independent(num_pairs, batch_size, generator) if independent else batches(num_pairs, batch_size, generator)


class Student:
    """A model whose trainable parameters are a flat list of tensors, trained functionally.

    `unroll` keeps the graph of every inner SGD step, so the matching loss differentiates back to
    the synthetic pixels, text embeddings and learning rates (`vlbench.tm.tesla` recomputes the
    steps instead, in constant memory).
    """

    def __init__(self, model: VLModel, fold_lora_scale: bool = True):
        self.model = model
        # What the inner loss calls: `model`, or a copy with LoRA scales folded (the same numbers, faster)
        self.forward_model = with_folded_lora_scale(model) if fold_lora_scale else model
        trainable = model.trainable_parameters()
        self.names = list(trainable)
        self.sides = [model.side_of(n) for n in self.names]
        self.frozen = {n: t.detach() for n, t in [*model.named_parameters(), *model.named_buffers()] if n not in trainable}

    def params_of(self, checkpoint: dict[str, Tensor], device: torch.device) -> list[Tensor]:
        missing = set(self.names) - checkpoint.keys()
        if missing:
            raise VLBenchError(f"expert checkpoint lacks {len(missing)} trainable parameter(s), e.g. {sorted(missing)[0]}; "
                               "the buffer was built for another model variant")
        return [checkpoint[n].to(device) for n in self.names]

    def temperature(self, log_logit_scale: bool = False) -> float:
        """The inner loss's temperature; `log_logit_scale` scales logits by log(1/T) instead of 1/T
        (the official inner loop's un-exponentiated logit scale: 2.66 instead of 14.29 for T = 0.07)."""
        return 1 / math.log(1 / self.model.temperature) if log_logit_scale else self.model.temperature

    def loss(self, params: list[Tensor], pixels: Tensor, text: Tensor, log_logit_scale: bool = False,
             batch_loss: BatchLoss = contrastive, indices: Tensor | None = None) -> Tensor:
        """The inner loss at `params` on one batch (`indices`: its rows of the synthetic set)."""
        image_emb, text_emb = functional_call(self.forward_model, {**self.frozen, **dict(zip(self.names, params))},
                                              (pixels, text))
        return batch_loss(image_emb, text_emb, self.temperature(log_logit_scale), indices)

    def direction(self, params: list[Tensor], images: Tensor, text: Tensor, indices: Tensor, weight_decay: float,
                  log_logit_scale: bool, batch_loss: BatchLoss, create_graph: bool) -> list[Tensor | None]:
        """One step's gradient + weight decay * params on the batch `indices` (`params` require grad)."""
        with record_function("tm.inner_forward"):
            loss = self.loss(params, images[indices], text[indices], log_logit_scale, batch_loss, indices)
        with record_function("tm.inner_backward"):
            # allow_unused: a parameter outside the forward (e.g. a ViT's unused fc_norm) gets no gradient
            grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
        return [None if g is None else g + weight_decay * p for p, g in zip(params, grads)]

    def unroll(self, start: list[Tensor], images: Tensor, text: Tensor, lrs: dict[str, Tensor], steps: int,
               batch_size: int, generator: torch.Generator, weight_decay: float = 0.0, momentum: float = 0.0,
               independent_batches: bool = False, log_logit_scale: bool = False,
               loss: BatchLoss | None = None) -> list[Tensor]:
        """`steps` steps of torch.optim.SGD's update rule (dampening 0), as evaluation trains.

        Batches walk through shuffled epochs of the set, or with `independent_batches` are each a
        fresh random draw of `batch_size` pairs. `loss` replaces the inner loss (default:
        `contrastive`, evaluation's clip loss); it sees each batch's indices.
        """
        params = [p.detach().requires_grad_(True) for p in start]
        lr = [lrs[s] for s in self.sides]
        velocity: list[Tensor | None] | None = None
        draws = inner_batches(len(images), batch_size, generator, independent_batches)
        with sdpa_kernel(SDPBackend.MATH):  # fused CPU attention has no double backward
            for _, idx in zip(range(steps), draws):
                d = self.direction(params, images, text, idx.to(images.device), weight_decay, log_logit_scale,
                                   loss or contrastive, create_graph=True)
                with record_function("tm.inner_update"):
                    params, velocity = sgd_step(params, velocity, d, lr, momentum)
        return params


def _independent(num_pairs: int, batch_size: int, generator: torch.Generator):
    """Endless batches, each a fresh random subset of `batch_size` pairs."""
    while True:
        yield torch.randperm(num_pairs, generator=generator)[:batch_size]
