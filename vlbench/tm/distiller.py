"""The outer loop: learn synthetic pixels, text embeddings and per-side inner learning rates so that
a student trained on them lands where the expert did.

Bounded by default (the prototype's text embeddings blew up from norm 1 to 17-80): every
meta-gradient group is norm-clipped, pixels are clamped to the valid image range, text rows keep
the norm of the real embeddings they started from, and learning rates live in log space within
[lr_min, lr_max]. Each of these is a switch (`DistillConfig`), off in the official code's semantics
(docs/fidelity.md). A non-finite loss or gradient rolls the step back and halves the learning rates
(outer and learned inner).

A method built on trajectory matching adds its own learnable tensors (`Learnable`) and an inner loss
that reads them (`loss`, a `BatchLoss`); they get the same optimiser, clipping, finiteness check,
rollback and checkpoints as the pixels and text.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.profiler import record_function

from vlbench.api import SIDES, VLBenchError, derived_seed, option
from vlbench.progress import Bar, bar
from vlbench.spaces import Choice, LogUniform
from vlbench.storage import atomic_path
from vlbench.tm import inner
from vlbench.tm.experts import Trajectory
from vlbench.tm.inner import BatchLoss, Student
from vlbench.tm.tesla import unroll_tesla

MAX_CONSECUTIVE_ROLLBACKS = 10
log = logging.getLogger(__name__)


#: Values of the switches, the default first: vlbench's semantics, then the official code's (`unroll` aside).
CHOICES = {
    "start_epochs": ("inclusive", "exclusive"),
    "inner_logit_scale": ("model", "log"),
    "inner_optimizer": ("evaluation", "plain"),
    "inner_batches": ("epochs", "independent"),
    "lr_space": ("log", "linear"),
    # not a fidelity switch (the official code unrolls fully): the meta-gradient through the stored
    # graph of every inner step, or TESLA's constant-memory recomputation (vlbench.tm.tesla)
    "unroll": ("full", "tesla"),
}


@dataclass
class DistillConfig:
    """The distillation hyperparameters (paper values in configs/*-tm*.yaml; CPU defaults here).

    The switches after `checkpoint_every` select the official code's semantics where it differs;
    their defaults are vlbench's. docs/fidelity.md names the official function behind each.
    """

    iterations: int = option(100, "outer iterations (steps of the synthetic data)", search=Choice(50, 100, 200))
    syn_steps: int = option(10, "inner SGD steps per iteration (paper: 8)", search=Choice(5, 10, 20))
    expert_epochs: int = option(1, "M: the target is M expert epochs after the start (paper: 1)")
    max_start_epoch: int = option(1, "T+: start epochs are drawn from 0..T+ (paper: 2; see start_epochs)",
                                  search=Choice(0, 1))
    batch_syn: int = option(100, "synthetic pairs per inner step (capped at the budget)")
    lr_img: float = option(1.0, "outer SGD lr of the pixels; chosen on val (docs/protocol.md; paper: 1000)",
                           search=LogUniform(0.1, 100.0))
    lr_txt: float = option(0.1, "outer SGD lr of the text embeddings; chosen on val (paper: 1000)",
                           search=LogUniform(0.01, 10.0))
    lr_lr: float = option(0.01, "outer SGD lr of the inner learning rates (of their logs with lr_space log)")
    lr_init: float = option(0.03, "initial inner learning rate of both sides (paper: the expert lr, 0.1)")
    # On CPU false wins: plain SGD at any lr trains the default model ~2 points worse than momentum
    # (docs/distillation.md).
    learn_lrs: bool = option(False, "learn per-side inner lrs (paper presets: true); false: the inner loop is the "
                                    "evaluation protocol's SGD (its lr, momentum 0.9)")
    momentum: float = option(0.5, "outer SGD momentum (paper: 0.5)")
    max_grad_norm: float | None = option(1.0, "per-group norm clipping of the meta-gradients; null: none (official)")
    lr_min: float = option(1e-4, "lowest learned inner lr (with clamp_lrs)")
    lr_max: float = option(10.0, "highest learned inner lr (with clamp_lrs)")
    checkpoint_every: int = option(25, "iterations between checkpoints a rerun resumes from")
    start_epochs: str = option("inclusive", "inclusive: start epochs 0..max_start_epoch; exclusive: "
                                            "0..max_start_epoch-1 (official np.random.randint)")
    inner_logit_scale: str = option("model", "model: the inner loss scales logits by 1/temperature, as experts and "
                                             "evaluation do; log: by log(1/temperature) (official)")
    inner_optimizer: str = option("evaluation", "evaluation: the inner loop runs evaluation's SGD (momentum, weight "
                                                "decay); plain: plain SGD at the inner lr (official)")
    inner_batches: str = option("epochs", "epochs: inner batches walk through shuffled epochs of the synthetic set; "
                                          "independent: a fresh random batch per step (official)")
    lr_space: str = option("log", "inner lrs learned as their logs (log) or directly (linear, official)")
    clamp_pixels: bool = option(True, "clamp pixels to the valid image range after each step (official: false)")
    renorm_text: bool = option(True, "keep each text row at its initial norm (official: false)")
    clamp_lrs: bool = option(True, "keep the inner lrs within [lr_min, lr_max] (official: false)")
    unroll: str = option("full", "full: backpropagate through every stored inner step (memory grows with "
                                 "syn_steps); tesla: TESLA's constant-memory meta-gradient, approximate")

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise VLBenchError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.start_epochs == "exclusive" and self.max_start_epoch < 1:
            raise VLBenchError("start_epochs 'exclusive' draws from 0..max_start_epoch-1: max_start_epoch must be >= 1")

    @property
    def start_epoch_choices(self) -> int:
        """How many start epochs there are to draw from."""
        return self.max_start_epoch + (self.start_epochs == "inclusive")


@dataclass
class Bounds:
    """Where the synthetic data may live: the valid pixel range and the real text norm per row."""

    pixel_low: Tensor  # broadcastable to the images
    pixel_high: Tensor
    text_norm: Tensor  # (N, 1)


@dataclass
class Learnable:
    """A tensor a method learns beyond pixels, text and lrs (e.g. soft-target factors): a leaf that
    requires grad, on the distiller's device, learned in place (so the loss may hold it), with its
    own outer SGD lr (the distiller's `momentum`)."""

    tensor: Tensor
    lr: float


class Distiller:
    """Runs `config.iterations` outer steps, checkpointing to `state_path`; a rerun resumes there.

    `learnables` ({name: Learnable}) are optimised alongside the synthetic pairs, each as its own
    group; `loss` replaces the inner loss (default: `inner.contrastive`) and may read them.
    """

    def __init__(self, student: Student, trajectories: list[Trajectory], images: Tensor, text: Tensor,
                 config: DistillConfig, seed: int, state_path: Path, weight_decay: float = 0.0,
                 inner_momentum: float = 0.0, device: torch.device | str = "cpu",
                 learnables: Mapping[str, Learnable] | None = None, loss: BatchLoss | None = None):
        last_start = config.start_epoch_choices - 1
        if last_start + config.expert_epochs >= min(len(t) for t in trajectories):
            raise VLBenchError(f"start epochs up to {last_start} + expert_epochs {config.expert_epochs} need "
                               f"experts with more than {min(len(t) for t in trajectories) - 1} epochs")
        self.student, self.trajectories, self.config, self.seed = student, trajectories, config, seed
        self.state_path, self.device = Path(state_path), torch.device(device)
        self.weight_decay, self.inner_momentum = weight_decay, inner_momentum
        self.images = images.detach().clone().to(self.device).requires_grad_(True)
        self.text = text.detach().clone().to(self.device).requires_grad_(True)
        # The inner lrs as optimised: their logs (lr_space "log") or the lrs themselves ("linear").
        self.lr_param = torch.full((len(SIDES),), self._to_param(config.lr_init), device=self.device,
                                   requires_grad=config.learn_lrs)
        self.learnables, self.loss = dict(learnables or {}), loss
        for name, learnable in self.learnables.items():
            t = learnable.tensor
            if not (t.is_leaf and t.requires_grad and t.device == self.images.device):
                raise VLBenchError(f"learnable {name!r} must be a leaf tensor that requires grad, on {self.images.device}")
        self.optimizer = torch.optim.SGD([
            {"params": [self.images], "lr": config.lr_img},
            {"params": [self.text], "lr": config.lr_txt},
            *([{"params": [self.lr_param], "lr": config.lr_lr}] if config.learn_lrs else []),
            *({"params": [x.tensor], "lr": x.lr} for x in self.learnables.values()),
        ], momentum=config.momentum)
        self.iteration = 0
        self.history: list[dict[str, float]] = []  # per iteration: loss per side
        self.rollbacks: list[dict[str, float]] = []

    def _to_param(self, lr: float) -> float:
        return math.log(lr) if self.config.lr_space == "log" else lr

    def inner_lrs(self) -> Tensor:
        """The inner lrs (image, text) as a differentiable function of `lr_param`."""
        return self.lr_param.exp() if self.config.lr_space == "log" else self.lr_param

    @property
    def log_lr(self) -> Tensor:
        return self.inner_lrs().detach().log()

    @property
    def lrs(self) -> dict[str, float]:
        return {side: v.item() for side, v in zip(SIDES, self.inner_lrs())}

    # --------------------------------------------------------------------- state

    def state(self) -> dict:
        return {"iteration": self.iteration, "images": self.images.detach().clone(), "text": self.text.detach().clone(),
                "lr_param": self.lr_param.detach().clone(), "optimizer": _clone(self.optimizer.state_dict()),
                "history": list(self.history), "rollbacks": list(self.rollbacks),
                "learnables": {name: x.tensor.detach().clone() for name, x in self.learnables.items()}}

    def load_state(self, state: dict) -> None:
        saved = state.get("learnables", {})  # checkpoints from before learnables existed hold none
        if set(saved) != set(self.learnables):
            raise VLBenchError(f"checkpoint {self.state_path} holds learnables {sorted(saved)}, this run "
                               f"has {sorted(self.learnables)}: another method's state")
        with torch.no_grad():
            for name in ("images", "text", "lr_param"):
                getattr(self, name).copy_(state[name])
            for name, x in self.learnables.items():
                x.tensor.copy_(saved[name])
        self.optimizer.load_state_dict(_clone(state["optimizer"]))
        self.iteration, self.history, self.rollbacks = state["iteration"], list(state["history"]), list(state["rollbacks"])

    def save(self) -> None:
        with atomic_path(self.state_path) as tmp:
            torch.save(self.state(), tmp)

    def resume(self) -> bool:
        if not self.state_path.exists():
            return False
        self.load_state(torch.load(self.state_path, map_location=self.device, weights_only=False))
        return True

    # --------------------------------------------------------------------- steps

    def draw(self, iteration: int) -> tuple[int, int, torch.Generator]:
        """An iteration's expert and start epoch, and the generator its inner batches continue from:
        they depend on (seed, iteration) only."""
        generator = torch.Generator().manual_seed(derived_seed("tm", self.seed, iteration))
        expert = int(torch.randint(len(self.trajectories), (1,), generator=generator))
        start_epoch = int(torch.randint(self.config.start_epoch_choices, (1,), generator=generator))
        return expert, start_epoch, generator

    def matching(self, iteration: int) -> dict[str, Tensor]:
        """The matching loss of one iteration."""
        c = self.config
        expert, start_epoch, generator = self.draw(iteration)
        trajectory = self.trajectories[expert]
        start = self.student.params_of(trajectory[start_epoch], self.device)
        target = self.student.params_of(trajectory[start_epoch + c.expert_epochs], self.device)
        lrs = dict(zip(SIDES, self.inner_lrs()))
        batch = min(c.batch_syn, len(self.images))
        if c.unroll == "full":
            unroll = self.student.unroll
        else:  # TESLA differentiates only what it is handed: the loss's own tensors are named
            unroll = functools.partial(unroll_tesla, self.student, loss_inputs=[x.tensor for x in self.learnables.values()])
        final = unroll(start, self.images, self.text, lrs, c.syn_steps, batch, generator, self.weight_decay,
                       self.inner_momentum, independent_batches=c.inner_batches == "independent",
                       log_logit_scale=c.inner_logit_scale == "log", loss=self.loss)
        return inner.matching_loss(final, start, target, self.student.sides)

    def step(self, bounds: Bounds) -> dict[str, float]:
        """One outer step; rolls back and halves the learning rates if anything is not finite."""
        good = self.state()
        self.optimizer.zero_grad(set_to_none=True)
        with record_function("tm.unroll"):
            losses = self.matching(self.iteration)
        loss = sum(losses.values())
        if torch.isfinite(loss):
            with record_function("tm.meta_backward"):
                loss.backward()
        params = (self.images, self.text, self.lr_param, *(x.tensor for x in self.learnables.values()))
        if not torch.isfinite(loss) or not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
            return self.roll_back(good, loss.item())
        with record_function("tm.outer_update"):
            if self.config.max_grad_norm is not None:
                for p in params:  # per group: pixels, text, lrs (and learnables) have gradients of very different scale
                    torch.nn.utils.clip_grad_norm_([p], self.config.max_grad_norm)
            self.optimizer.step()
            self.project(bounds)
        if self.config.learn_lrs and (self.inner_lrs() <= 0).any():
            # only reachable with lr_space "linear" and clamp_lrs off (the official code), whose
            # evaluation, at most 50 iterations later, fails on the negative lr: fail now instead
            raise VLBenchError(f"inner lr became {self.lrs} at iteration {self.iteration} (lr_space linear without "
                               "clamp_lrs, as in the official code): set clamp_lrs true or lower lr_lr")
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
                self.lr_param.copy_(self.lr_param - math.log(2) if self.config.lr_space == "log" else self.lr_param / 2)
                self.clamp_lrs()
        for group in self.optimizer.param_groups:
            group["lr"] /= 2
        self.rollbacks.append({"iteration": self.iteration, "loss": loss, **{f"lr_{s}": v for s, v in self.lrs.items()}})
        message = (f"tm: non-finite matching loss ({loss}) at iteration {self.iteration}: rolled back, halved the "
                   f"learning rates (inner now {', '.join(f'{s} {v:.3g}' for s, v in self.lrs.items())})")
        log.warning(message)
        return {}

    @torch.no_grad()
    def project(self, bounds: Bounds) -> None:
        """The safeguards that are switched on: pixel range, text norms, lr bounds."""
        if self.config.clamp_pixels:
            self.images.copy_(torch.maximum(torch.minimum(self.images, bounds.pixel_high), bounds.pixel_low))
        if self.config.renorm_text:
            self.text.mul_(bounds.text_norm / self.text.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.clamp_lrs()

    @torch.no_grad()
    def clamp_lrs(self) -> None:
        if self.config.clamp_lrs:
            self.lr_param.clamp_(self._to_param(self.config.lr_min), self._to_param(self.config.lr_max))

    def run(self, bounds: Bounds, progress: Callable[..., Bar] = bar) -> None:
        """Distil to `config.iterations` (from the last checkpoint, if any), with a bar from `progress` (the
        condenser's `ctx.progress`)."""
        if self.resume():
            log.info(f"tm: resuming at iteration {self.iteration} from {self.state_path}")
        with progress(self.config.iterations, "trajectory matching", "it", initial=self.iteration) as iterations:
            while self.iteration < self.config.iterations:
                losses = self.step(bounds)
                if losses:
                    iterations.update(note=f"loss {sum(losses.values()):.3f} " +
                                      " ".join(f"lr_{s} {v:.3g}" for s, v in self.lrs.items()))
                    if self.iteration % self.config.checkpoint_every == 0:
                        self.save()
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
