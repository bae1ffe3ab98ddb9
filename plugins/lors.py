"""`lors`: Low-Rank Similarity Mining (Xu et al., ICML 2024) on vlbench's trajectory-matching engine.

tm-lora's distillation, plus a learned image-caption similarity matrix used as soft contrastive
targets: S = diag(a) + (alpha / r) L Rᵀ over the N synthetic pairs, with a = 1, L ~ N(0, 1) and
R = 0 at the start (so S starts as the identity, the hard pairing), all three learned by the same
meta-gradient as the pixels and text. The inner loop reads each batch's sub-matrix of S with the
loss `target_loss` names (the set records it, so evaluation reads S the same way); the set stores
the factors (`LowRankTargets`), priced at their size.
The LoRS-specific defaults are the authors' Flickr30K 100-pair script's (silicx/LoRS_Distill,
sh/distill_flickr_lors_100.sh); everything shared is tm-lora's (docs/distillation.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlbench.api import CondenseContext, CondensedSet, LowRankTargets, VLBenchError, derived_seed, option
from vlbench.spaces import Choice, LogUniform
from vlbench.tm import TM_ENGINE, Distiller, Learnable, Setup, TMCondenser, TMConfig
from vlbench.versions import CodeVersion
from vlbench.train import TARGET_LOSSES


@dataclass
class LoRSConfig(TMConfig):
    lr_sim: float = option(1.0, "outer SGD lr of a, L and R (chosen on val: configs/tuning/lors.yaml; "
                                "LoRS's script: 10)", search=LogUniform(0.01, 10.0))
    sim_rank: int = option(10, "r, the rank of the learned similarity (--sim_rank 10)")
    sim_alpha: float = option(3.0, "alpha: the low-rank term is scaled by alpha / r (--alpha 3)")
    #: How S is read, in distillation and evaluation alike; with cross_entropy and lr_sim 0 it is tm-lora exactly.
    target_loss: str = option("wbce", "how S is read: wbce (LoRS's --loss_type WBCE, each entry its own match "
                                      "probability; chosen on val) or cross_entropy (rows as distributions)",
                               search=Choice("wbce", "cross_entropy"))

    def __post_init__(self):
        super().__post_init__()
        if self.sim_rank < 1 or self.lr_sim < 0:
            raise VLBenchError(f"lors needs sim_rank >= 1 and lr_sim >= 0, got {self.sim_rank} and {self.lr_sim}")
        if self.target_loss not in TARGET_LOSSES:
            raise VLBenchError(f"lors option target_loss must be one of {', '.join(TARGET_LOSSES)}, "
                               f"got {self.target_loss!r}")


class LoRS(TMCondenser):
    name = "lors"
    Config = LoRSConfig
    extras = frozenset({"learned_lrs", "soft_targets"})
    matches = "lora"
    code_version = CodeVersion("condenser:lors", 1, ("vlbench_plugins.lors", *TM_ENGINE))
    added_later = {**TMCondenser.added_later, "target_loss": "cross_entropy"}  # the val records before it

    def learnables(self, ctx: CondenseContext, setup: Setup):
        n, c = len(setup.images), self.config
        generator = torch.Generator().manual_seed(derived_seed("lors", ctx.seed))
        factors = {"diagonal": torch.ones(n), "left": torch.randn(n, c.sim_rank, generator=generator),
                   "right": torch.zeros(n, c.sim_rank)}
        learned = {k: Learnable(v.to(ctx.device).requires_grad_(True), c.lr_sim) for k, v in factors.items()}

        read = TARGET_LOSSES[c.target_loss]

        def loss(image_emb, text_emb, temperature, indices):
            return read(image_emb, text_emb, temperature, self.targets(learned, indices).dense())

        return learned, loss

    def targets(self, learned: dict[str, Learnable], rows: torch.Tensor | slice = slice(None)) -> LowRankTargets:
        """S restricted to `rows` (a batch), with alpha / r folded into the left factor as stored."""
        scale = self.config.sim_alpha / self.config.sim_rank
        return LowRankTargets(left=learned["left"].tensor[rows] * scale, right=learned["right"].tensor[rows],
                              diagonal=learned["diagonal"].tensor[rows])

    def result(self, ctx: CondenseContext, setup: Setup, distiller: Distiller) -> CondensedSet:
        condensed = super().result(ctx, setup, distiller)
        full = self.targets(distiller.learnables)
        condensed.soft_targets = LowRankTargets(*(t.detach().cpu() for t in (full.left, full.right, full.diagonal)))
        condensed.target_loss = self.config.target_loss
        return condensed
