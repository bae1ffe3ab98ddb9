"""Trajectory matching: expert buffers, the unrolled inner loop, the outer distillation loop, and the
condenser that wires them (`TMCondenser`), for `tm`, `tm-lora` and any method built on them.

docs/distillation.md describes each part and how a method extends the engine.
"""
from vlbench.core import derived_seed  # re-exported: methods built on the engine long imported it from here
from vlbench.tm.condenser import TM_ENGINE, Setup, TMCondenser, TMConfig, pixel_bounds
from vlbench.tm.distiller import Bounds, DistillConfig, Distiller, Learnable
from vlbench.tm.experts import (
           ExpertBuffer,
           ExpertSpec,
           Trajectory,
           noise_floor,
)
from vlbench.tm.inner import BatchLoss, Student, contrastive, matching_loss
from vlbench.tm.memory import SavedTensorMemory
from vlbench.tm.stage import ExpertBufferStage
from vlbench.tm.tesla import unroll_tesla

__all__ = ["BatchLoss", "Bounds", "DistillConfig", "Distiller", "ExpertBuffer", "ExpertBufferStage", "ExpertSpec", "Learnable",
           "SavedTensorMemory", "Setup", "Student", "TMCondenser", "TMConfig", "Trajectory", "contrastive",
           "derived_seed", "matching_loss", "noise_floor", "pixel_bounds", "unroll_tesla"]
