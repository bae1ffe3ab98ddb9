"""The checks every condensed set passes before it is cached or trained on.

Shared by the runner (a bad set is an error naming the plugin, and is never cached) and by the
conformance kit (`vlbench.testing`), so that the two cannot disagree about what a valid set is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from vlbench.api import SIDES, Backbone, CondensedSet, Condenser, LowRankTargets
from vlbench.pixels import pixel_range

#: The extras evaluation uses (learned lrs: per-side lrs; soft targets: `soft_clip_loss`). A condenser
#: declaring any other is refused before it condenses: nothing a set stores is silently ignored.
KNOWN_EXTRAS = frozenset({"learned_lrs", "soft_targets"})
#: Slack for pixels at the edge of the valid range (float error of normalise/denormalise round trips).
PIXEL_SLACK = 1e-4


class InvalidSet(ValueError):
    """A condensed set breaks the contract; the message says how, in one line."""


@dataclass(frozen=True)
class Expected:
    """What a set must fit: the run's budget and training pairs, the condenser's declared extras, the condensing
    backbone's shapes and pixel range (`normalization` None: the condenser declares unbounded pixels)."""

    budget: int
    num_train: int
    declared_extras: frozenset[str]
    image_size: int
    text_dim: int
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None

    @classmethod
    def of(cls, condenser: Condenser, backbone: Backbone, budget: int, num_train: int) -> Expected:
        return cls(budget, num_train, type(condenser).extras, backbone.image_size, backbone.text_encoder.dim,
                   backbone.normalization if condenser.bounded_pixels() else None)


def _float_tensor(name: str, t: Any, shape: tuple[int, ...]) -> None:
    if not isinstance(t, Tensor) or t.dtype != torch.float32 or tuple(t.shape) != shape:
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise InvalidSet(f"{name} must be float32 of shape {shape}, got {got}")
    if t.requires_grad:
        raise InvalidSet(f"{name} requires grad: return .detach()ed tensors")
    if not torch.isfinite(t).all():
        raise InvalidSet(f"{name} holds NaN or infinite values")


def check_budget(cs: CondensedSet, expected: Expected) -> None:
    if len(cs) != expected.budget:
        raise InvalidSet(f"returned {len(cs)} pairs for budget {expected.budget}")


def check_shapes(cs: CondensedSet, expected: Expected) -> None:
    """Images (N, 3, S, S) and text (N, d) finite float32; extras well-formed; source indices in range."""
    n, size, num_train = len(cs), expected.image_size, expected.num_train
    _float_tensor("images", cs.images, (n, 3, size, size))
    _float_tensor("text_features", cs.text_features, (n, expected.text_dim))
    if cs.soft_targets is not None:
        check_targets(cs.soft_targets, n)
    if cs.learned_lrs is not None:
        if not isinstance(cs.learned_lrs, dict) or set(cs.learned_lrs) != set(SIDES):
            raise InvalidSet(f"learned_lrs must be a dict with keys {', '.join(SIDES)}, got {cs.learned_lrs!r}")
        for side, lr in cs.learned_lrs.items():
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
                raise InvalidSet(f"learned_lrs[{side!r}] must be a positive Python float, got {lr!r}")
    if cs.source_indices is not None:
        idx = cs.source_indices
        if idx.dtype != torch.long or idx.shape != (n,):
            raise InvalidSet(f"source_indices must be int64 of shape ({n},), got {idx.dtype} {tuple(idx.shape)}")
        if n and not (0 <= int(idx.min()) and int(idx.max()) < num_train):
            raise InvalidSet(f"source_indices must lie in [0, {num_train}), got {idx.min()}..{idx.max()}")


def check_targets(targets: Tensor | LowRankTargets, n: int) -> None:
    """Dense (N, N) or factored (N, r) x 2 (+ (N,) diagonal); every pair has a positive target both ways."""
    if isinstance(targets, LowRankTargets):
        rank = max(targets.left.shape[-1] if isinstance(targets.left, Tensor) else 1, 1)  # rank 0: "not (N, 1)"
        _float_tensor("soft_targets.left", targets.left, (n, rank))
        _float_tensor("soft_targets.right", targets.right, (n, rank))
        if targets.diagonal is not None:
            _float_tensor("soft_targets.diagonal", targets.diagonal, (n,))
    elif isinstance(targets, Tensor):
        _float_tensor("soft_targets", targets, (n, n))
    else:
        raise InvalidSet(f"soft_targets must be an (N, N) tensor or a LowRankTargets, got {type(targets).__name__}")
    dense = targets.dense() if isinstance(targets, LowRankTargets) else targets
    # soft_clip_loss reads negatives as 0: a pair without positive weight would never be pulled to a partner.
    for side, dim in (("image", 1), ("caption", 0)):
        empty = ((dense > 0).sum(dim) == 0).nonzero().flatten()
        if len(empty):
            raise InvalidSet(f"soft_targets give {side} {int(empty[0])} no positive target ({len(empty)} such); "
                             "every pair needs one (negative entries count as 0)")


def check_declared(declared: Any) -> None:
    """The extras a condenser class declares: a set of names the evaluation uses."""
    if not isinstance(declared, (set, frozenset)) or not all(isinstance(name, str) for name in declared):
        raise InvalidSet(f"declares `extras` = {declared!r}, not a frozenset of names")
    unknown = set(declared) - KNOWN_EXTRAS
    if unknown:
        raise InvalidSet(f"declares extras {sorted(unknown)} that evaluation cannot use "
                         f"(it uses: {', '.join(sorted(KNOWN_EXTRAS))})")


def check_extras(cs: CondensedSet, expected: Expected) -> None:
    declared = expected.declared_extras
    check_declared(declared)
    used = {name for name in KNOWN_EXTRAS if getattr(cs, name) is not None}
    if used - set(declared):
        raise InvalidSet(f"stores {', '.join(sorted(used - set(declared)))} without declaring it: "
                         f"set `extras = frozenset({sorted(used)})` on the class")


def check_pixel_range(cs: CondensedSet, expected: Expected) -> None:
    """Pixels must be images: inside the normalised image of [0, 1] under the backbone's (mean, std), unless the
    condenser declares unbounded pixels (`Condenser.bounded_pixels`)."""
    normalization = expected.normalization
    if normalization is None:
        return
    low, high = pixel_range(normalization)
    below = (low - cs.images).amax().item()
    above = (cs.images - high).amax().item()
    if max(below, above) > PIXEL_SLACK / min(normalization[1]):
        raise InvalidSet(f"pixels leave the valid image range by {max(below, above):.3g} (normalised units); "
                         "clamp them into vlbench.pixel_range(backbone.normalization), the backbone's normalised [0, 1]")


#: Every check the runner applies to a set, in order, by the name the conformance kit reports it under.
CHECKS: dict[str, Callable[[CondensedSet, Expected], None]] = {
    "budget": check_budget, "shapes": check_shapes, "extras": check_extras, "pixel-range": check_pixel_range,
}


def check_condensed(cs: CondensedSet, expected: Expected) -> None:
    """Every check, in order; raises InvalidSet with the first problem."""
    for check in CHECKS.values():
        check(cs, expected)
