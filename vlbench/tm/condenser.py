"""Trajectory matching as a condenser: the expert buffer, the initial pairs and their bounds, the
distiller and the condensed set, wired once for every method built on the engine.

`tm` and `tm-lora` are `TMCondenser` with a name (and `matches`); a method that learns more than
pixels, text and lrs overrides `learnables` (its tensors and the inner loss that reads them) and
`result` (what it adds to the set), and inherits the rest (docs/distillation.md).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from vlbench.api import (
    Backbone,
    CondenseContext,
    CondensedSet,
    Condenser,
    TrainProtocol,
    VLBenchError,
    VLModel,
    derived_seed,
    option,
)
from vlbench.coreset import random_pairs
from vlbench.pixels import pixel_range
from vlbench.tm.distiller import Bounds, DistillConfig, Distiller, Learnable
from vlbench.tm.experts import ExpertBuffer, ExpertSpec, Trajectory
from vlbench.tm.inner import BatchLoss, Student


@dataclass
class TMConfig(DistillConfig):
    num_experts: int = option(2, "expert trajectories (paper: 20)")
    train_epochs: int = option(2, "epochs per expert (paper: 10)")
    expert_lr: float = option(0.01, "experts' SGD lr (paper: 0.1)")
    expert_momentum: float = option(0.0, "experts' SGD momentum (0: a momentum buffer would restart every epoch)")
    expert_batch_size: int = option(128, "experts' batch size (paper: 128)")
    expert_weight_decay: float | None = option(None, "experts' weight decay; null: the protocol's (official: 0)")
    expert_augment: str = option("none", "none, crop_flip or crop_flip_randaugment (official: crop + flip + "
                                         "RandomAugment(2, 5))")
    expert_text: str = option("cached", "cached: experts train on the text encoder's cached eval-mode features; live: "
                                        "recomputed every batch in train mode, dropout on (official)")
    # As the official code draws its initial images from its (augmented) training data set.
    init_augment: bool = option(False, "initialise from real pairs put through expert_augment; false: the "
                                       "un-augmented images")

    def __post_init__(self):
        super().__post_init__()
        if self.init_augment and self.expert_augment == "none":
            raise VLBenchError("init_augment draws its images through expert_augment: set expert_augment too")
        last_start = self.start_epoch_choices - 1
        if last_start + self.expert_epochs > self.train_epochs:  # before any expert is trained
            raise VLBenchError(f"start epochs up to {last_start} + expert_epochs {self.expert_epochs} reach beyond the "
                               f"experts' train_epochs {self.train_epochs}: lower max_start_epoch or train longer")


@dataclass
class Setup:
    """What a distillation starts from: the matched model variant, its expert trajectories, the initial
    pairs (training indices `picked`, on the CPU) and where the synthetic data may live."""

    backbone: Backbone
    trajectories: list[Trajectory]
    picked: Tensor
    images: Tensor
    text: Tensor
    bounds: Bounds


def pixel_bounds(backbone: Backbone, text: Tensor, device: torch.device | str) -> Bounds:
    """Valid pixels ([0, 1] in the backbone's normalised space) and each text row's initial norm."""
    low, high = pixel_range(backbone.normalization, device)
    return Bounds(pixel_low=low, pixel_high=high, text_norm=text.norm(dim=1, keepdim=True).to(device))


#: The engine's modules: a condenser built on it lists them in its `code_version` (vlbench/versions.py);
#: vlbench.coreset draws the initial pairs (random_pairs).
TM_ENGINE = ("vlbench.tm.condenser", "vlbench.tm.distiller", "vlbench.tm.inner", "vlbench.tm.lora_fold",
             "vlbench.tm.tesla", "vlbench.tm.memory", "vlbench.tm.experts", "vlbench.train", "vlbench.coreset")


class TMCondenser(Condenser):
    """Trajectory matching (Wu et al. 2024, on MTT): experts on all training pairs, a synthetic set
    initialised from the seed's random pairs, distilled by `Distiller`."""

    Config = TMConfig
    extras = frozenset({"learned_lrs"})
    requires = frozenset({"expert_buffer"})  # a sweep builds each buffer once, first (vlbench/tm/stage.py)
    #: The trainable parameters experts record and students match: "all" (every weight) or "lora"
    #: (LoRA adapters + heads, on a backbone with adapters).
    matches: ClassVar[str] = "all"

    def bounded_pixels(self) -> bool:
        return self.config.clamp_pixels

    added_later = {"unroll": "full", "expert_text": "cached"}

    # ----------------------------------------------------------------- experts

    def variant(self, backbone: Backbone) -> Backbone:
        """The backbone whose trainable parameters are recorded and matched."""
        return backbone if self.matches == "lora" else backbone.full_finetuning()

    def check_model(self, model: VLModel) -> None:
        if self.matches == "lora" and not model.lora_parameter_names():
            raise VLBenchError(f"{self.name} matches LoRA adapters and needs a backbone with them (lora_rank > 0); "
                               "use `tm` to match all parameters")

    def expert_spec(self, ctx: CondenseContext) -> ExpertSpec:
        c = self.config
        weight_decay = ctx.protocol.weight_decay if c.expert_weight_decay is None else c.expert_weight_decay
        return ExpertSpec(epochs=c.train_epochs, lr=c.expert_lr, momentum=c.expert_momentum, weight_decay=weight_decay,
                          batch_size=c.expert_batch_size, augment=c.expert_augment,
                          normalization=None if c.expert_augment == "none" else ctx.backbone.normalization,
                          precision=ctx.protocol.precision, text=c.expert_text)

    def check_flip_safe(self, ctx: CondenseContext) -> None:
        """Crops and flips contradict captions that name positions (synthscenes): refuse them there."""
        if self.config.expert_augment != "none" and not ctx.flip_safe:
            raise VLBenchError(f"expert_augment {self.config.expert_augment!r} crops and flips, but {ctx.dataset.name!r} "
                               "captions name positions: use expert_augment none")

    def experts(self, ctx: CondenseContext) -> tuple[Backbone, list[Trajectory]]:
        """The matched variant and its `num_experts` trajectories: the one entry point to the expert
        buffer (built, extended or reused under `ExpertBuffer.locate`'s key)."""
        self.check_flip_safe(ctx)
        backbone = self.variant(ctx.backbone)
        self.check_model(backbone.build(0))
        buffer = ExpertBuffer.locate(ctx.dataset.fingerprint, backbone.id, self.expert_spec(ctx))
        trajectories = buffer.build(self.config.num_experts, functools.partial(backbone.build, device=ctx.device), ctx.train,
                                    ctx.device, backbone.text_encoder)
        return backbone, trajectories

    # ----------------------------------------------------------------- the distillation

    def setup(self, ctx: CondenseContext) -> Setup:
        ctx.check_budget()
        backbone, trajectories = self.experts(ctx)
        picked = random_pairs(ctx)  # iteration 0 is the random coreset
        images, text = ctx.train.select(picked)
        if self.config.init_augment:
            augment = self.expert_spec(ctx).augmentation()
            images = augment(images.to(ctx.device), torch.Generator().manual_seed(derived_seed("init", ctx.seed))).cpu()
        return Setup(backbone, trajectories, picked, images, text, pixel_bounds(ctx.backbone, text, ctx.device))

    def inner_sgd(self, protocol: TrainProtocol) -> tuple[float, float]:
        """(weight decay, momentum) of the inner loop: what evaluation trains with, or plain SGD."""
        if self.config.inner_optimizer == "plain":
            return 0.0, 0.0
        return protocol.weight_decay, protocol.learned_lr_momentum if self.config.learn_lrs else protocol.momentum

    def learnables(self, ctx: CondenseContext, setup: Setup) -> tuple[dict[str, Learnable], BatchLoss | None]:
        """A method's own learnable tensors (on ctx.device) and the inner loss that reads them;
        plain trajectory matching has none and the evaluation's contrastive loss."""
        return {}, None

    def distiller(self, ctx: CondenseContext, setup: Setup) -> Distiller:
        # By default the inner loop trains as evaluation will: at the learned lrs with
        # protocol.learned_lr_momentum, or (learn_lrs false) with the protocol's own lr and momentum.
        c = self.config if self.config.learn_lrs else dataclasses.replace(self.config, lr_init=ctx.protocol.lr)
        weight_decay, momentum = self.inner_sgd(ctx.protocol)
        learnables, loss = self.learnables(ctx, setup)
        return Distiller(Student(setup.backbone.build(0, ctx.device)), setup.trajectories, setup.images, setup.text, c,
                         ctx.seed, ctx.work_dir / "tm_state.pt", weight_decay, momentum, ctx.device, learnables, loss)

    def result(self, ctx: CondenseContext, setup: Setup, distiller: Distiller) -> CondensedSet:
        """The condensed set of a finished distillation (a method adds what it learned)."""
        history = distiller.history
        window = max(1, min(10, len(history) // 4))
        return CondensedSet(
            images=distiller.images.detach().cpu(), text_features=distiller.text.detach().cpu(),
            learned_lrs=distiller.lrs if self.config.learn_lrs else None,
            meta={"matched_parameters": sum(v.numel() for v in setup.trajectories[0][0].values()),
                  "matching_loss_first": _mean(history[:window]), "matching_loss_last": _mean(history[-window:]),
                  "rollbacks": distiller.rollbacks, "init_indices": setup.picked.tolist()},
        )

    def condense(self, ctx: CondenseContext) -> CondensedSet:
        setup = self.setup(ctx)
        distiller = self.distiller(ctx, setup)
        distiller.run(setup.bounds, ctx.progress)
        return self.result(ctx, setup, distiller)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} if rows else {}
