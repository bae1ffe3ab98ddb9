"""The outer loop: learn synthetic pixels, text embeddings and per-side inner learning rates so that
a student trained on them lands where the expert did.

Bounded by construction (the prototype's text embeddings blew up from norm 1 to 17-80): every
meta-gradient group is norm-clipped, pixels are clamped to the valid image range, text rows keep
the norm of the real embeddings they started from, and learning rates live in log space within
[lr_min, lr_max]. A non-finite loss or gradient rolls the step back and halves the learning rates (outer and learned inner).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from vlbench.api import SIDES, VLBenchError
from vlbench.tm import inner
from vlbench.tm.experts import Trajectory, derived_seed
from vlbench.tm.inner import Student

MAX_CONSECUTIVE_ROLLBACKS = 10


@dataclass
class DistillConfig:
    """The distillation hyperparameters (paper values in configs/*-tm*.yaml; CPU defaults here)."""

    iterations: int = 100
    syn_steps: int = 10  # inner SGD steps per iteration (paper: 8)
    expert_epochs: int = 1  # M: the target is M epochs after the start (paper: 1)
    max_start_epoch: int = 1  # T+: start epochs are drawn from 0..T+ (paper: 2)
    batch_syn: int = 100  # synthetic pairs per inner step (capped at the budget)
    lr_img: float = 30.0  # outer SGD lr of the pixels (paper: 1000)
    lr_txt: float = 0.3  # outer SGD lr of the text embeddings (paper: 1000)
    lr_lr: float = 0.01  # outer SGD lr of the log inner learning rates (paper: 0.01, on the lr itself)
    lr_init: float = 0.03  # initial inner learning rate of both sides (paper: the expert lr, 0.1)
    # false: no learned lrs; the inner loop is the evaluation protocol's SGD (its lr and momentum 0.9).
    # On CPU this wins: plain SGD at any lr trains the default model ~2 points worse than momentum
    # (docs/distillation.md). The paper presets learn them (true).
    learn_lrs: bool = False
    momentum: float = 0.5  # outer SGD momentum (paper: 0.5)
    max_grad_norm: float = 1.0  # per-group clipping of the meta-gradients
    lr_min: float = 1e-4
    lr_max: float = 10.0
    checkpoint_every: int = 25


@dataclass
class Bounds:
    """Where the synthetic data may live: the valid pixel range and the real text norm per row."""

    pixel_low: Tensor  # broadcastable to the images
    pixel_high: Tensor
    text_norm: Tensor  # (N, 1)


class Distiller:
    """Runs `config.iterations` outer steps, checkpointing to `state_path`; a rerun resumes there."""

    def __init__(self, student: Student, trajectories: list[Trajectory], images: Tensor, text: Tensor,
                 config: DistillConfig, seed: int, state_path: Path, weight_decay: float = 0.0,
                 inner_momentum: float = 0.0, device: torch.device | str = "cpu", progress: bool = True):
        if config.max_start_epoch + config.expert_epochs >= min(len(t) for t in trajectories):
            raise VLBenchError(f"max_start_epoch {config.max_start_epoch} + expert_epochs {config.expert_epochs} needs "
                               f"experts with more than {min(len(t) for t in trajectories) - 1} epochs")
        self.student, self.trajectories, self.config, self.seed = student, trajectories, config, seed
        self.state_path, self.device, self.progress = Path(state_path), torch.device(device), progress
        self.weight_decay, self.inner_momentum = weight_decay, inner_momentum
        self.images = images.detach().clone().to(self.device).requires_grad_(True)
        self.text = text.detach().clone().to(self.device).requires_grad_(True)
        self.log_lr = torch.full((len(SIDES),), math.log(config.lr_init), device=self.device, requires_grad=config.learn_lrs)
        self.optimizer = torch.optim.SGD([
            {"params": [self.images], "lr": config.lr_img},
            {"params": [self.text], "lr": config.lr_txt},
            *([{"params": [self.log_lr], "lr": config.lr_lr}] if config.learn_lrs else []),
        ], momentum=config.momentum)
        self.iteration = 0
        self.history: list[dict[str, float]] = []  # per iteration: loss per side
        self.rollbacks: list[dict[str, float]] = []

    @property
    def lrs(self) -> dict[str, float]:
        return {side: self.log_lr[k].exp().item() for k, side in enumerate(SIDES)}

    # --------------------------------------------------------------------- state

    def state(self) -> dict:
        return {"iteration": self.iteration, "images": self.images.detach().clone(), "text": self.text.detach().clone(),
                "log_lr": self.log_lr.detach().clone(), "optimizer": _clone(self.optimizer.state_dict()),
                "history": list(self.history), "rollbacks": list(self.rollbacks)}

    def load_state(self, state: dict) -> None:
        with torch.no_grad():
            for name in ("images", "text", "log_lr"):
                getattr(self, name).copy_(state[name])
        self.optimizer.load_state_dict(_clone(state["optimizer"]))
        self.iteration, self.history, self.rollbacks = state["iteration"], list(state["history"]), list(state["rollbacks"])

    def save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(self.state_path)

    def resume(self) -> bool:
        if not self.state_path.exists():
            return False
        self.load_state(torch.load(self.state_path, map_location=self.device, weights_only=False))
        return True

    # --------------------------------------------------------------------- steps

    def matching(self, iteration: int) -> dict[str, Tensor]:
        """The matching loss of one iteration; its randomness depends on (seed, iteration) only."""
        c = self.config
        generator = torch.Generator().manual_seed(derived_seed("tm", self.seed, iteration))
        trajectory = self.trajectories[int(torch.randint(len(self.trajectories), (1,), generator=generator))]
        start_epoch = int(torch.randint(c.max_start_epoch + 1, (1,), generator=generator))
        start = self.student.params_of(trajectory[start_epoch], self.device)
        target = self.student.params_of(trajectory[start_epoch + c.expert_epochs], self.device)
        lrs = {side: self.log_lr[k].exp() for k, side in enumerate(SIDES)}
        batch = min(c.batch_syn, len(self.images))
        final = self.student.unroll(start, self.images, self.text, lrs, c.syn_steps, batch, generator, self.weight_decay,
                                    self.inner_momentum)
        return inner.matching_loss(final, start, target, self.student.sides)

    def step(self, bounds: Bounds) -> dict[str, float]:
        """One outer step; rolls back and halves the learning rates if anything is not finite."""
        good = self.state()
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.matching(self.iteration)
        loss = sum(losses.values())
        if torch.isfinite(loss):
            loss.backward()
        params = (self.images, self.text, self.log_lr)
        if not torch.isfinite(loss) or not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
            return self.roll_back(good, loss.item())
        for p in params:  # per group: pixels, text and lrs have gradients of very different scale
            torch.nn.utils.clip_grad_norm_([p], self.config.max_grad_norm)
        self.optimizer.step()
        self.project(bounds)
        self.iteration += 1
        self.history.append({side: v.item() for side, v in losses.items()})
        return self.history[-1]

    def roll_back(self, good: dict, loss: float) -> dict[str, float]:
        self.load_state(good)
        consecutive = sum(1 for r in self.rollbacks if r["iteration"] == self.iteration)
        if consecutive >= MAX_CONSECUTIVE_ROLLBACKS:
            raise VLBenchError(f"matching loss stayed non-finite at iteration {self.iteration} after {consecutive} "
                               "rollbacks; lower lr_init, lr_img or lr_txt")
        if self.config.learn_lrs:  # fixed inner lrs are the evaluation's: only the outer steps shrink
            with torch.no_grad():
                self.log_lr.sub_(math.log(2)).clamp_(math.log(self.config.lr_min), math.log(self.config.lr_max))
        for group in self.optimizer.param_groups:
            group["lr"] /= 2
        self.rollbacks.append({"iteration": self.iteration, "loss": loss, **{f"lr_{s}": v for s, v in self.lrs.items()}})
        message = (f"tm: non-finite matching loss ({loss}) at iteration {self.iteration}: rolled back, halved the "
                   f"learning rates (inner now {', '.join(f'{s} {v:.3g}' for s, v in self.lrs.items())})")
        tqdm.write(message)
        return {}

    @torch.no_grad()
    def project(self, bounds: Bounds) -> None:
        self.images.copy_(torch.maximum(torch.minimum(self.images, bounds.pixel_high), bounds.pixel_low))
        self.text.mul_(bounds.text_norm / self.text.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.log_lr.clamp_(math.log(self.config.lr_min), math.log(self.config.lr_max))

    def run(self, bounds: Bounds) -> None:
        if self.resume() and self.progress:
            tqdm.write(f"tm: resuming at iteration {self.iteration} from {self.state_path}")
        bar = tqdm(total=self.config.iterations, initial=self.iteration, desc="trajectory matching", unit="it",
                   disable=not self.progress)
        while self.iteration < self.config.iterations:
            losses = self.step(bounds)
            if losses:
                bar.update()
                bar.set_postfix(loss=f"{sum(losses.values()):.3f}", **{f"lr_{s}": f"{v:.3g}" for s, v in self.lrs.items()})
                if self.iteration % self.config.checkpoint_every == 0:
                    self.save()
        bar.close()
        self.save()


def _clone(obj):
    """Deep copy of a (nested) optimizer state: rollbacks must not share tensors with the live state."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj
