"""Expert trajectories: the shared trainer's parameters after every epoch, cached and resumable."""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import Tensor

from vlbench import costs
from vlbench.api import (
    Pairs, TextEncoder, TrainProtocol, VLBenchError, VLModel, cache_dir, derived_seed, stable_hash, without_added_later,
)
from vlbench.data.transforms import Augment, expert_augment
from vlbench.parallel import Pool, pool_workers
from vlbench.progress import bar
from vlbench.provenance import tensors_sha256
from vlbench.storage import atomic_save_tensors, atomic_write_json, file_lock
from vlbench.train import TrainData, train
from vlbench.versions import CodeVersion

#: What trains expert trajectories (bump when they change; vlbench/versions.py).
EXPERT_BUFFER = CodeVersion("expert_buffer", 1, ("vlbench.tm.experts", "vlbench.train", "vlbench.data.transforms"))

Trajectory = list[dict[str, Tensor]]  # trainable parameters after epochs 0, 1, ..., E


@dataclass(frozen=True)
class ExpertSpec:
    """How experts are trained: the shared trainer with these SGD settings, one call per epoch."""

    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    seed: int = 0
    #: Train-time augmentation (`vlbench.data.transforms.expert_augment`): "none", "crop_flip" or
    #: "crop_flip_randaugment" (the official experts'); the latter needs the backbone's normalization.
    augment: str = "none"
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    #: The evaluation protocol's (`TrainProtocol.precision`): experts train as evaluation models do.
    precision: str = "fp32"
    #: "cached": the text encoder's cached (eval-mode) features; "live": recomputed every batch by the
    #: encoder in train mode, dropout on, as the official experts' BERT is (its epoch.py: `net.train()`).
    text: str = "cached"

    #: Fields added after buffers were built, with the value those buffers had: out of their keys there.
    added_later: ClassVar[dict] = {"precision": "fp32", "text": "cached"}

    def __post_init__(self):
        self.augmentation()  # an unknown augmentation is an error before anything trains
        if self.text not in ("cached", "live"):
            raise VLBenchError(f"expert text must be 'cached' or 'live', got {self.text!r}")

    def protocol(self, steps: int) -> TrainProtocol:
        return TrainProtocol(steps=steps, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                             weight_decay=self.weight_decay, precision=self.precision)

    def train_data(self, pairs: Pairs, text_encoder: TextEncoder | None) -> TrainData:
        """What experts train on: the pairs, their text recomputed every batch by `text_encoder` when "live"."""
        data = TrainData.from_pairs(pairs)
        if self.text == "live":
            if text_encoder is None:
                raise ValueError("live expert text needs the backbone's text encoder")
            # a partial, not a lambda: it pickles, so live experts can train in worker processes
            data.live_text = functools.partial(_live_text, text_encoder, pairs.captions)
        return data

    def augmentation(self) -> Augment | None:
        return expert_augment(self.augment, self.normalization)

    def key_fields(self) -> dict:
        """What identifies a buffer: everything but the number of epochs (so that buffers extend).
        Unaugmented specs leave the augmentation fields out, and the fields added later at their old value:
        their buffers keep the keys they had."""
        fields = without_added_later({**dataclasses.asdict(self), "epochs": None}, self.added_later)
        if self.augment == "none":
            del fields["augment"], fields["normalization"]
        return fields


class ExpertBuffer:
    """Expert trajectories on disk: `expert_<i>.safetensors` (keys `<epoch>/<param>`) + manifest.json.

    The directory is keyed by data set, backbone (and its variant) and the expert spec minus the
    number of epochs, so asking for more experts or epochs extends a buffer instead of retraining.
    Each finished epoch is written atomically: a killed build resumes at the next epoch.
    """

    def __init__(self, directory: Path, spec: ExpertSpec):
        self.directory, self.spec = Path(directory), spec

    @classmethod
    def locate(cls, dataset_fingerprint: str, backbone_id: str, spec: ExpertSpec) -> "ExpertBuffer":
        key = stable_hash([dataset_fingerprint, backbone_id, spec.key_fields(), *EXPERT_BUFFER.key()])
        return cls(cache_dir() / "experts" / f"{backbone_id}-{key}", spec)

    def path(self, i: int) -> Path:
        return self.directory / f"expert_{i}.safetensors"

    def trajectory(self, i: int) -> Trajectory:
        from safetensors.torch import load_file

        if not self.path(i).exists():
            return []
        flat = load_file(str(self.path(i)))
        epochs = sorted({int(k.split("/", 1)[0]) for k in flat})
        return [{k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(f"{e}/")} for e in epochs]

    def _save(self, i: int, trajectory: Trajectory) -> None:
        atomic_save_tensors({f"{e}/{k}": v for e, ckpt in enumerate(trajectory) for k, v in ckpt.items()}, self.path(i))

    def complete(self, num: int) -> bool:
        return all(len(self.trajectory(i)) > self.spec.epochs for i in range(num))

    def build(self, num: int, make_model: Callable[[int], VLModel], train_pairs: Pairs,
              device: torch.device | str = "cpu", text_encoder: TextEncoder | None = None) -> list[Trajectory]:
        """Train what is missing of `num` experts x `spec.epochs` epochs; return the trajectories
        (`text_encoder`: the backbone's, which "live" expert text needs).

        Holds an exclusive lock on the buffer meanwhile: concurrent runs wait instead of training twice.
        """
        with file_lock(self.directory / ".lock"):
            trajectories = [self.trajectory(i) for i in range(num)]
            if all(len(t) > self.spec.epochs for t in trajectories):
                costs.reusing("expert_buffer", self.directory)
            else:
                with costs.building("expert_buffer", self.directory):  # a resumed build is charged its last part
                    self._build(trajectories, make_model, self.spec.train_data(train_pairs, text_encoder), device)
        used = [t[: self.spec.epochs + 1] for t in trajectories]
        costs.content(self.directory, tensors_sha256({f"{i}/{e}/{name}": value for i, t in enumerate(used)
                                                      for e, ckpt in enumerate(t) for name, value in ckpt.items()}))
        return used

    def _build(self, trajectories: list[Trajectory], make_model: Callable[[int], VLModel], data: TrainData,
               device) -> None:
        """Extend the loaded `trajectories` in place to `spec.epochs` epochs each.

        Experts are independent: they train on a pool of single-threaded workers (vlbench/parallel.py), each
        trajectory the same whatever the pool. `make_model` must pickle to reach a worker.
        """
        num = len(trajectories)
        todo = [i for i, t in enumerate(trajectories) if len(t) <= self.spec.epochs]
        missing = sum(self.spec.epochs + 1 - len(trajectories[i]) for i in todo)
        workers = pool_workers(len(todo), torch.device(device).type)
        epochs = bar(missing, f"expert buffer ({num} x {self.spec.epochs} epochs)", "epoch")
        on_epoch = epochs.update if workers == 1 else None  # a worker's epochs are counted when its expert is done
        pool = Pool(workers, _share_train_data, (data,))
        extend = functools.partial(self._extend, make_model=make_model, device=device, on_epoch=on_epoch)
        for k, trajectory in pool.map(extend, [(i, trajectories[i]) for i in todo]):
            if on_epoch is None:
                epochs.update(len(trajectory) - len(trajectories[todo[k]]))
            trajectories[todo[k]][:] = trajectory
            self._write_manifest(num, trajectory)
        epochs.close()

    def _extend(self, item: tuple[int, Trajectory], make_model: Callable[[int], VLModel], device,
                on_epoch: Callable[[], object] | None) -> Trajectory:
        """Expert i's trajectory trained to `spec.epochs` epochs, each epoch saved as it finishes."""
        i, trajectory = item
        data = _train_data["data"]
        steps = -(-len(data) // min(self.spec.batch_size, len(data)))
        model = make_model(derived_seed("expert", self.spec.seed, i))
        if trajectory:  # resume: the latest finished epoch
            model.load_state_dict(trajectory[-1], strict=False)
        else:
            trajectory = [_snapshot(model)]
            if on_epoch:
                on_epoch()
        while len(trajectory) <= self.spec.epochs:
            # One trainer call per epoch, seeded by (expert, epoch), so that resuming replays the
            # same batches; SGD momentum (0 by default) restarts at each epoch boundary.
            epoch = len(trajectory)
            train(model, data, self.spec.protocol(steps), derived_seed("expert", self.spec.seed, i, epoch), device=device,
                  augment=self.spec.augmentation())
            trajectory = [*trajectory, _snapshot(model)]
            self._save(i, trajectory)
            if on_epoch:
                on_epoch()
        return trajectory

    def _write_manifest(self, num: int, trajectory: Trajectory) -> None:
        checkpoint_bytes = sum(v.numel() * v.element_size() for v in trajectory[0].values())
        atomic_write_json(self.directory / "manifest.json", {
            "spec": dataclasses.asdict(self.spec), "experts": num, "parameters": sorted(trajectory[0]),
            "numel": sum(v.numel() for v in trajectory[0].values()), "bytes_per_checkpoint": checkpoint_bytes,
            "bytes_per_trajectory": checkpoint_bytes * (self.spec.epochs + 1),
        })

    def manifest(self) -> dict:
        return json.loads((self.directory / "manifest.json").read_text())


# The training pairs every expert trains on: sent once to each worker, not once per expert.
_train_data: dict[str, TrainData] = {}


def _share_train_data(data: TrainData) -> None:
    _train_data["data"] = data


def _live_text(text_encoder: TextEncoder, captions: list[str], idx: Tensor, device: torch.device) -> Tensor:
    return text_encoder.train_mode_encode([captions[i] for i in idx.tolist()], device)


def _snapshot(model: VLModel) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.trainable_parameters().items()}


def noise_floor(trajectory: Trajectory, model: VLModel, train_pairs: Pairs, spec: ExpertSpec, start_epoch: int,
                expert_epochs: int, device: torch.device | str = "cpu",
                text_encoder: TextEncoder | None = None) -> dict[str, float]:
    """The matching loss of a replay: the expert's segment rerun from the same start with another batch order.

    A distilled student cannot be asked to match a target more closely than SGD noise does, so
    a target is only informative when this is well below 1.
    """
    from vlbench.tm.inner import matching_loss

    data = spec.train_data(train_pairs, text_encoder)
    steps = -(-len(data) // min(spec.batch_size, len(data)))
    model.load_state_dict(trajectory[start_epoch], strict=False)
    for epoch in range(expert_epochs):
        train(model, data, spec.protocol(steps), derived_seed("replay", spec.seed, start_epoch, epoch), device=device,
              augment=spec.augmentation())
    names = list(trajectory[0])
    replay = _snapshot(model)
    losses = matching_loss([replay[n] for n in names], [trajectory[start_epoch][n] for n in names],
                           [trajectory[start_epoch + expert_epochs][n] for n in names], [model.side_of(n) for n in names])
    return {side: v.item() for side, v in losses.items()}
