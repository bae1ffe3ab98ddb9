"""The one contrastive trainer: evaluation models and expert trajectories both come from here.

Sharing it is what keeps the logit scale, the loss and the optimiser identical between experts,
distillation targets and evaluation (the official code's 2.66 vs 14.29 logit scale is exactly
the drift this prevents).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vlbench.api import Pairs, TrainProtocol, VLBenchError, VLModel
from vlbench.metrics import retrieval_metrics


def clip_loss(image_emb: Tensor, text_emb: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE over a batch of matching pairs (row i of each side is a pair)."""
    logits = image_emb @ text_emb.t() / temperature
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def soft_clip_loss(image_emb: Tensor, text_emb: Tensor, temperature: float, targets: Tensor) -> Tensor:
    """Symmetric InfoNCE against soft targets: `targets[i, j]` weighs caption j as a match of image i.

    Image->text is the cross-entropy of each row of the softmax logits against that row of the
    targets normalised to sum 1; text->image the same with `targets.T`; the loss is their mean.
    Negative entries count as 0 (a learned low-rank product may dip below zero). A row with no
    positive weight in the batch (its partners are all outside it) contributes 0 and still counts
    in the mean, as LoRS's CWCL loss does. At the identity this is `clip_loss`, bit for bit.
    """
    logits = image_emb @ text_emb.t() / temperature
    # Negatives read as 0; a target at exactly 0 keeps its gradient (clamp would zero it), so that learned
    # targets starting there, as LoRS's S = I + L·0ᵀ does, can move at all. The forward is clamp's.
    weights = torch.where(targets < 0, 0.0, targets)
    return (_soft_cross_entropy(logits, weights) + _soft_cross_entropy(logits.t(), weights.t())) / 2


def _soft_cross_entropy(logits: Tensor, weights: Tensor) -> Tensor:
    mass = weights.sum(1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)  # an empty row stays 0
    per_row = -((weights / mass) * F.log_softmax(logits, 1)).sum(1)
    # Averaged by nll_loss, which sums in cross_entropy's order (torch.mean does not): exact at the identity.
    return F.nll_loss(-per_row[:, None], torch.zeros(len(per_row), dtype=torch.long, device=per_row.device))


def wbce_clip_loss(image_emb: Tensor, text_emb: Tensor, temperature: float, targets: Tensor) -> Tensor:
    """LoRS's balanced binary cross-entropy: each entry `targets[i, j]` is read on its own as the
    probability that caption j matches image i, against the sigmoid of the same logit as `clip_loss`.
    Entries above 0.5 and the rest are averaged separately, and the two means averaged, so that the
    N positives weigh as much as the N² - N negatives. Targets are used raw (not clamped), as LoRS does.
    """
    logits = image_emb @ text_emb.t() / temperature
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    positive = targets.detach() > 0.5
    return (_masked_mean(per_entry, positive) + _masked_mean(per_entry, ~positive)) / 2


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the masked entries; 0 when there are none (a batch of one pair has no negatives)."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


#: How a set's soft targets are read, by the name a `CondensedSet.target_loss` gives.
TARGET_LOSSES: dict[str, Callable[[Tensor, Tensor, float, Tensor], Tensor]] = {
    "cross_entropy": soft_clip_loss,
    "wbce": wbce_clip_loss,
}


def make_optimizer(
    model: VLModel, protocol: TrainProtocol, learned_lrs: dict[str, float] | None = None
) -> torch.optim.SGD:
    """SGD with one parameter group per side; learned lrs replace the protocol's lr (per side, or the
    image lr for both sides when `protocol.learned_lr_sides == "image"`, as the official code does)."""
    momentum = protocol.momentum if learned_lrs is None else protocol.learned_lr_momentum
    groups = []
    for side, params in model.trainable_by_side().items():
        if params:
            lr_side = "image" if protocol.learned_lr_sides == "image" else side
            lr = protocol.lr if learned_lrs is None else float(learned_lrs[lr_side])
            groups.append({"params": list(params.values()), "lr": lr, "name": side})
    return torch.optim.SGD(groups, lr=protocol.lr, momentum=momentum, weight_decay=protocol.weight_decay)


@dataclass
class TrainData:
    """Pairs to train on: per-pair image indices into `images`, per-pair text features, and optionally
    (N, N) soft targets between the pairs, read by the loss `target_loss` names."""

    images: Tensor
    pair_image: Tensor
    text_features: Tensor
    targets: Tensor | None = None
    target_loss: str = "cross_entropy"  # the key of TARGET_LOSSES that reads `targets`
    #: (pair indices, device) -> that batch's text features, computed in place of `text_features[indices]`
    #: (experts with "live" text: the encoder in train mode, every batch).
    live_text: Callable[[Tensor, torch.device], Tensor] | None = None

    @classmethod
    def from_pairs(cls, pairs: Pairs) -> "TrainData":
        return cls(pairs.images, pairs.pair_image, pairs.text_features)

    @classmethod
    def from_condensed(cls, images: Tensor, text_features: Tensor, targets: Tensor | None = None,
                       target_loss: str = "cross_entropy") -> "TrainData":
        return cls(images, torch.arange(len(images)), text_features, targets, target_loss)

    def __post_init__(self):
        if self.target_loss not in TARGET_LOSSES:
            raise VLBenchError(f"unknown target loss {self.target_loss!r}: choose one of {', '.join(TARGET_LOSSES)}")

    def __len__(self) -> int:
        return len(self.pair_image)


def autocast(device: torch.device, precision: str):
    """The protocol's precision: "bf16" runs the forward under bfloat16 autocast (on the CPU too; no loss
    scaling needed), "fp32" in full precision on every device."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise VLBenchError(f"{torch.cuda.get_device_name(device)} has no bf16: use protocol precision fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def batches(num_pairs: int, batch_size: int, generator: torch.Generator):
    """Endless epoch-wise shuffled batches of pair indices (the last short batch is kept)."""
    while True:
        order = torch.randperm(num_pairs, generator=generator)
        yield from order.split(batch_size)


def train(
    model: VLModel,
    data: TrainData,
    protocol: TrainProtocol,
    seed: int,
    *,
    learned_lrs: dict[str, float] | None = None,
    steps: int | None = None,
    device: torch.device | str = "cpu",
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    on_epoch_end: Callable[[int, VLModel], None] | None = None,
    on_step: Callable[[], object] | None = None,
) -> VLModel:
    """Train `model` in place for `steps` (default: protocol.steps) SGD steps.

    Batch order, augmentation and dropout draw from generators seeded with `seed` alone; `augment(pixels,
    generator)` gets each batch already on `device`. The forward runs at `protocol.precision`.
    `on_epoch_end(epoch, model)` is called after every full pass over the pairs (experts use it), `on_step()`
    after every step (a progress bar's `update`).
    The loss is `clip_loss`, or the set's target loss (`TARGET_LOSSES`) on each batch's sub-matrix when
    `data.targets` is set.
    """
    device = torch.device(device)
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, protocol, learned_lrs)
    total = protocol.steps if steps is None else steps
    batch_size = min(protocol.batch_size, len(data))
    steps_per_epoch = -(-len(data) // batch_size)
    # Dropout draws from the global RNG: seed it too, and give the caller's RNG back untouched.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for step, idx in zip(range(total), batches(len(data), batch_size, generator)):
            pixels = data.images[data.pair_image[idx]].to(device)
            if augment is not None:
                pixels = augment(pixels, generator)
            with autocast(device, protocol.precision):
                text = data.text_features[idx].to(device) if data.live_text is None else data.live_text(idx, device)
                image_emb, text_emb = model(pixels, text)
            if data.targets is None:
                loss = clip_loss(image_emb.float(), text_emb.float(), model.temperature)
            else:  # the batch's own sub-matrix of the targets
                targets = data.targets[idx][:, idx].to(device)
                loss = TARGET_LOSSES[data.target_loss](image_emb.float(), text_emb.float(), model.temperature, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step()
            if on_epoch_end is not None and (step + 1) % steps_per_epoch == 0:
                on_epoch_end((step + 1) // steps_per_epoch, model)
                model.train()  # the callback may have evaluated the model
    return model


@torch.no_grad()
def embed(model: VLModel, pairs: Pairs, device: torch.device | str = "cpu", batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Joint-space embeddings of every image and every caption of a split."""
    model.to(device).eval()
    images = torch.cat([model.encode_image(b.to(device)).cpu() for b in pairs.images.split(batch_size)])
    texts = torch.cat([model.encode_text(b.to(device)).cpu() for b in pairs.text_features.split(batch_size)])
    return images, texts


def evaluate(model: VLModel, pairs: Pairs, device: torch.device | str = "cpu") -> dict[str, float]:
    """Retrieval recall of `model` on a split (TR/IR @1/5/10 and their mean)."""
    images, texts = embed(model, pairs, device)
    return retrieval_metrics(images, texts, pairs.pair_image)

