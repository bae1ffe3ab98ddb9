"""What an autograd graph holds: bytes of the tensors saved for backward, total and at peak.

Measured with torch.autograd.graph.saved_tensors_hooks, so it works the same on CPU (where torch
keeps no allocator statistics) and GPU: every tensor an op saves for its backward is counted while
the graph node holding it lives. It counts activations and other saved tensors, not parameters,
gradients or outputs that no node saves; a storage saved by several nodes counts each time.
"""
from __future__ import annotations

from torch import Tensor
from torch.autograd.graph import saved_tensors_hooks


class _Held:
    """A saved tensor; its bytes count as live until the graph node that saved it is freed."""

    def __init__(self, tracker: SavedTensorMemory, tensor: Tensor):
        self.tracker, self.tensor, self.bytes = tracker, tensor, tensor.numel() * tensor.element_size()
        tracker.live += self.bytes
        tracker.total += self.bytes
        tracker.peak = max(tracker.peak, tracker.live)

    def __del__(self):
        self.tracker.live -= self.bytes


class SavedTensorMemory:
    """Context manager: `peak` (bytes alive at once) and `total` (bytes ever saved) while active,
    backward passes run inside it included."""

    def __init__(self):
        self.live = self.total = self.peak = 0

    def __enter__(self) -> SavedTensorMemory:
        self._hooks = saved_tensors_hooks(lambda t: _Held(self, t), lambda held: held.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
