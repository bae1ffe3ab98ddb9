"""The constant-memory meta-gradient of TESLA (Cui et al., ICML 2023), for vlbench's inner SGD.

The inner loop ends at theta_N = theta_0 - sum_k lr * c_k * d_k, where d_k is step k's gradient +
weight decay * theta_k and c_k = 1 + mu + ... + mu^(N-1-k) its total weight under momentum mu.
Given lambda = dL/dtheta_N, the meta-gradient is therefore a sum of per-step terms
-c_k * lr * lambda . d_k, each differentiated on its own: a first pass runs the steps without a
graph to reach theta_N; the backward pass runs them again, one step's graph at a time. Memory is
one step's, whatever `syn_steps`; the cost is one extra forward and backward per step.

As in the paper, each term is differentiated with theta_k held fixed: the terms through which a
batch moves the later steps' parameters (Hessian products) are dropped. It is exact for one step
and an approximation beyond (docs/distillation.md measures how close).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlbench.api import SIDES
from vlbench.tm.inner import BatchLoss, Student, contrastive, inner_batches, sgd_step


@dataclass
class _Inner:
    """Everything but the differentiable inputs that a pass over the inner steps needs."""

    student: Student
    start: list[Tensor]
    batches: list[Tensor]
    weight_decay: float
    momentum: float
    log_logit_scale: bool
    loss: BatchLoss
    rng: tuple[Tensor, Tensor | None]  # CPU and CUDA generator states: dropout masks replay exactly

    def run(self, images: Tensor, text: Tensor, lr: list[Tensor], create_graph: bool,
            on_step: Callable[[int, list[Tensor | None]], None] | None = None) -> list[Tensor]:
        """Runs the steps from `start` (`lr` detached), handing each step's direction d_k to
        `on_step`; returns theta_N."""
        params, velocity = self.start, None
        with sdpa_kernel(SDPBackend.MATH):  # fused CPU attention has no double backward
            for k, idx in enumerate(self.batches):
                params = [p.detach().requires_grad_(True) for p in params]
                d = self.student.direction(params, images, text, idx, self.weight_decay, self.log_logit_scale,
                                           self.loss, create_graph)
                if on_step is not None:
                    on_step(k, d)
                params, velocity = sgd_step([p.detach() for p in params], velocity,
                                            [None if x is None else x.detach() for x in d], lr, self.momentum)
        return [p.detach() for p in params]


class _Tesla(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inner: _Inner, images: Tensor, text: Tensor, *rest: Tensor):
        lr = [rest[SIDES.index(s)].detach() for s in inner.student.sides]
        with torch.enable_grad():
            final = inner.run(images.detach(), text.detach(), lr, create_graph=False)
        ctx.inner = inner
        ctx.save_for_backward(images, text, *rest)
        return tuple(final)

    @staticmethod
    def backward(ctx, *lambdas: Tensor):
        inner: _Inner = ctx.inner
        images, text, *rest = ctx.saved_tensors
        sides = inner.student.sides
        n_steps, mu = len(inner.batches), inner.momentum
        # leaves for what this function owns; the loss's own tensors are the caller's (closure) ones
        mine = [t.detach().requires_grad_(need) for t, need in zip((images, text, *rest[:len(SIDES)]),
                                                                   ctx.needs_input_grad[1:3 + len(SIDES)])]
        extra = rest[len(SIDES):]
        wanted = [t for t, need in zip((*mine, *extra), ctx.needs_input_grad[1:]) if need]
        total = [torch.zeros_like(t) for t in wanted]
        lr = [mine[2 + SIDES.index(s)] for s in sides]
        weights = [sum(mu ** j for j in range(n_steps - k)) for k in range(n_steps)]  # c_k

        def accumulate(k: int, d: list[Tensor | None]) -> None:
            term = -weights[k] * sum(l * (lam * x).sum() for l, lam, x in zip(lr, lambdas, d) if x is not None)
            if wanted and term.requires_grad:
                grads = torch.autograd.grad(term, wanted, allow_unused=True)
                total[:] = [t if g is None else t + g for t, g in zip(total, grads)]

        devices = [images.device] if images.is_cuda else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.set_rng_state(inner.rng[0])
            if devices:
                torch.cuda.set_rng_state(inner.rng[1], images.device)
            inner.run(mine[0], mine[1], [x.detach() for x in lr], True, accumulate)
        out = iter(total)
        return None, *(next(out) if need else None for need in ctx.needs_input_grad[1:])


def unroll_tesla(student: Student, start: list[Tensor], images: Tensor, text: Tensor, lrs: dict[str, Tensor],
                 steps: int, batch_size: int, generator: torch.Generator, weight_decay: float = 0.0,
                 momentum: float = 0.0, independent_batches: bool = False, log_logit_scale: bool = False,
                 loss: BatchLoss | None = None, loss_inputs: Sequence[Tensor] = ()) -> list[Tensor]:
    """`Student.unroll`'s computation and arguments, with TESLA's meta-gradient (see the module).

    The returned parameters differentiate to `images`, `text`, the lrs and `loss_inputs`: tensors
    the `loss` callable reads that should receive meta-gradients (the full unroll finds those by
    itself; here they must be named).
    """
    draws = inner_batches(len(images), batch_size, generator, independent_batches)
    picked = [idx.to(images.device) for _, idx in zip(range(steps), draws)]
    rng = (torch.get_rng_state(), torch.cuda.get_rng_state(images.device) if images.is_cuda else None)
    inner = _Inner(student, [p.detach() for p in start], picked, weight_decay, momentum, log_logit_scale,
                   loss or contrastive, rng)
    lr = [x if isinstance(x, Tensor) else torch.tensor(x) for x in (lrs[s] for s in SIDES)]
    return list(_Tesla.apply(inner, images, text, *lr, *loss_inputs))
