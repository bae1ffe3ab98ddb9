"""Trajectory matching: expert buffers, the unrolled inner loop and the outer distillation loop.

Reusable by any trajectory-matching method (the `tm` and `tm-lora` plugins are thin wrappers).
"""
from vlbench.tm.distiller import Bounds, DistillConfig, Distiller
from vlbench.tm.experts import (
           ExpertBuffer,
           ExpertSpec,
           Trajectory,
           derived_seed,
           noise_floor,
)
from vlbench.tm.inner import BatchLoss, Student, contrastive, matching_loss
from vlbench.tm.memory import SavedTensorMemory
from vlbench.tm.tesla import unroll_tesla

__all__ = ["BatchLoss", "Bounds", "DistillConfig", "Distiller", "ExpertBuffer", "ExpertSpec", "SavedTensorMemory",
           "Student", "Trajectory", "contrastive", "derived_seed", "matching_loss", "noise_floor", "unroll_tesla"]
