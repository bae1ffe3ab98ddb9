"""The public interfaces and value types of vlbench.

Plugins implement `Condenser`, `Backbone` and `DatasetSource`; the harness passes `Pairs`,
`CondenseContext`, `CondensedSet`, `RunSpec` and `TrainProtocol` between them. Nothing here
knows any particular method, model or data set.
"""
from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import Tensor, nn

from vlbench.core import (  # noqa: F401 (re-exported)
    SIDES, SPLITS, Configured, PluginError, RunSpec, TrainProtocol, VLBenchError, cache_dir, check_budget, derived_seed,
    option, option_defaults, stable_hash, without_added_later,
)
from vlbench.pixels import BACKBONE, CANONICAL, for_backbone, to_canonical
from vlbench.progress import Bar, bar
from vlbench.versions import CodeVersion


# ----------------------------------------------------------------------------- data


@dataclass
class Split:
    """One split of a captioned image collection: image files and their captions."""

    name: str
    image_paths: list[Path]
    captions: list[list[str]]  # captions[i] are the captions of image i

    def __post_init__(self):
        if len(self.image_paths) != len(self.captions):
            raise ValueError("one caption list per image is required")

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    @property
    def pair_image(self) -> Tensor:
        """Image index of every (image, caption) pair, pairs in caption order."""
        return torch.tensor([i for i, caps in enumerate(self.captions) for _ in caps], dtype=torch.long)

    @property
    def pair_captions(self) -> list[str]:
        return [c for caps in self.captions for c in caps]

    @property
    def num_pairs(self) -> int:
        return sum(len(c) for c in self.captions)


@dataclass
class ImageTextDataset:
    """A loaded data set: its splits plus what makes results on it comparable."""

    name: str
    root: Path
    splits: dict[str, Split]
    fingerprint: str  # changes whenever the annotations or the image list change
    image_size: int | None = None  # native size, when all images share one (embedded data)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise VLBenchError(f"data set {self.name!r} has no {name!r} split (has: {', '.join(self.splits)})")
        return self.splits[name]


class DatasetSource(Configured, ABC):
    """A named, loadable data set (registered by plugins); its options are its `Config` (`Configured`)."""

    kind = "data set"
    name: ClassVar[str]
    #: Whether positions are meaningful (left/right in captions): then no horizontal flips.
    flip_safe: ClassVar[bool] = True

    @abstractmethod
    def load(self, data_root: Path | None) -> ImageTextDataset:
        """Read the annotations (and check the images exist); generate them if embedded."""


# ----------------------------------------------------------------------------- models


class TextEncoder(ABC):
    """A frozen text encoder: captions -> fixed embeddings, computed once and cached."""

    #: Identifies weights and pooling; part of every cache key that holds its output.
    id: str
    dim: int

    @abstractmethod
    def encode(self, captions: list[str], batch_size: int = 256) -> Tensor:
        """Return float32 (len(captions), dim) embeddings, on the CPU (progress: `vlbench.progress.bar`)."""

    def weight_files(self) -> dict[str, Path]:
        """{role: file} of the pretrained weights it loads, hashed into every record (none: random weights)."""
        return {}

    def train_mode_encode(self, captions: list[str], device: torch.device) -> Tensor:
        """Float32 features on `device` from a forward in train mode (dropout on, no gradient), drawn from
        torch's global RNG: what the official experts train on (expert text "live")."""
        raise VLBenchError(f"text encoder {self.id} cannot encode in train mode: use expert_text cached")


class VLModel(nn.Module):
    """A dual encoder trained on (image pixels, frozen text embeddings).

    Parameter names start with ``image_`` or ``text_`` so that every trainable tensor belongs to
    one side; distillers read and replace them through ``torch.func.functional_call``.
    """

    temperature: float = 0.07

    @abstractmethod
    def encode_image(self, pixels: Tensor) -> Tensor:
        """L2-normalised joint-space embeddings of normalised pixels."""

    @abstractmethod
    def encode_text(self, text_features: Tensor) -> Tensor:
        """L2-normalised joint-space embeddings of frozen text-encoder outputs."""

    def forward(self, pixels: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_image(pixels), self.encode_text(text_features)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    @staticmethod
    def side_of(name: str) -> str:
        side = name.split("_", 1)[0]
        if side not in SIDES:
            raise ValueError(f"parameter {name!r} belongs to no side (expected prefix image_ or text_)")
        return side

    def trainable_by_side(self) -> dict[str, dict[str, nn.Parameter]]:
        out: dict[str, dict[str, nn.Parameter]] = {s: {} for s in SIDES}
        for name, p in self.trainable_parameters().items():
            out[self.side_of(name)][name] = p
        return out

    def lora_parameter_names(self) -> set[str]:
        return {n for n in self.trainable_parameters() if "lora_" in n}


class Backbone(Configured, ABC):
    """A named model family: builds fresh VLModels, owns the frozen text encoder and transforms. Its options
    are its `Config` (`Configured`), type-checked when given."""

    kind = "backbone"
    name: ClassVar[str]

    def __init__(self, **options: Any):
        super().__init__(**options)
        # Only what differs from the defaults: spelling out a default gives the default's id and caches.
        self.non_default_options = {k: v for k, v in dataclasses.asdict(self.config).items() if v != self.defaults[k]}

    @property
    def id(self) -> str:
        """Name plus non-default options: what makes two backbones the same for caching and leaderboards."""
        return f"{self.name}-{stable_hash(self.non_default_options, 8)}" if self.non_default_options else self.name

    @property
    @abstractmethod
    def text_encoder(self) -> TextEncoder: ...

    @property
    @abstractmethod
    def image_size(self) -> int: ...

    @property
    @abstractmethod
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the image encoder's input normalisation."""

    @abstractmethod
    def build(self, seed: int, device: torch.device | str = "cpu") -> VLModel:
        """A fresh model: pretrained parts loaded, heads initialised from `seed`."""

    def prepare(self) -> None:
        """Fetch or compute what `build` needs (pretrained weights); idempotent and cached."""

    def weight_files(self) -> dict[str, Path]:
        """{role: file} of every pretrained weight file `build` loads (after `prepare`), text encoder included."""
        return {f"text_encoder/{role}": path for role, path in self.text_encoder.weight_files().items()}

    #: The config option that sets the image encoder's LoRA rank (0: full fine-tuning), if any.
    lora_option: ClassVar[str | None] = None

    def full_finetuning(self) -> "Backbone":
        """This backbone with every image-encoder weight trainable instead of LoRA adapters (for `tm`)."""
        return self if self.lora_option is None else type(self)(**{**self.non_default_options, self.lora_option: 0})


# ----------------------------------------------------------------------------- pairs


@dataclass
class Pairs:
    """The (image, caption) pairs of one split, ready for a model.

    `images` holds normalised image tensors (test transform), one per image; pairs point into it.
    For photo collections it is a `vlbench.data.bank.ImageBank` (uint8 storage): indexing, len,
    shape, split(n), nbytes and clone() behave as on the tensor.
    """

    images: Tensor  # (num_images, 3, H, W) float32, normalised
    pair_image: Tensor  # (num_pairs,) long
    text_features: Tensor  # (num_pairs, d) frozen text-encoder output
    captions: list[str]

    def __len__(self) -> int:
        return len(self.pair_image)

    def select(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Images and text features of the given pairs."""
        return self.images[self.pair_image[indices]], self.text_features[indices]


# ----------------------------------------------------------------------------- condensing


@dataclass
class CondenseContext:
    """Everything a condenser may use: training pairs, the backbone, the budget, a seed."""

    dataset: ImageTextDataset
    train: Pairs
    backbone: Backbone
    budget: int
    seed: int
    device: torch.device
    protocol: TrainProtocol
    work_dir: Path  # private, persistent scratch space for this condense job (checkpoints)
    #: Trains (or loads from cache) a model on the full training set with the shared trainer.
    reference_model: Callable[[int], VLModel] | None = None
    #: The data set's `DatasetSource.flip_safe`: whether crops and flips keep its captions true.
    flip_safe: bool = True

    def check_budget(self) -> None:
        """Before any work: 1 <= budget <= the training pairs, else a VLBenchError naming both."""
        check_budget(self.budget, len(self.train))

    def progress(self, total: int, desc: str, unit: str = "it", initial: int = 0) -> Bar:
        """A progress bar for long work, shown in the run's line on a terminal and as log lines elsewhere:
        `with ctx.progress(iterations, "my method") as bar: ... bar.update()` (`initial`: done before a resume)."""
        return bar(total, desc, unit, initial)


@dataclass
class LowRankTargets:
    """Soft targets stored factored: `diagonal(d) + left @ right.T` (LoRS's parameterisation, with its
    alpha / rank scale folded into the factors). `diagonal` None stores just `left @ right.T`."""

    left: Tensor  # (N, r)
    right: Tensor  # (N, r)
    diagonal: Tensor | None = None  # (N,)

    def dense(self) -> Tensor:
        out = self.left @ self.right.t()
        return out if self.diagonal is None else out + torch.diag(self.diagonal)

    def tensors(self) -> dict[str, Tensor]:
        """{part: tensor} of what is stored, in save order."""
        parts = {"left": self.left, "right": self.right, "diagonal": self.diagonal}
        return {k: v for k, v in parts.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        return {"form": "low_rank", "rank": self.left.shape[1], "diagonal": self.diagonal is not None}


#: The condensed-set format in the manifest. 2: images stored canonical (vlbench.pixels), the space
#: and resolution recorded under "pixels"; 1 (no "format"): images in the condensing backbone's space.
FORMAT = 2


@dataclass
class CondensedSet:
    """What a condenser produced, saved as safetensors plus a JSON manifest."""

    #: (N, 3, H, W) float32: in the condensing backbone's normalised input space as a condenser returns
    #: them, or canonical (`canonical` True: RGB on the [0, 1] scale, unclamped) as the harness saves them.
    images: Tensor
    text_features: Tensor  # (N, d) frozen text-encoder space
    learned_lrs: dict[str, float] | None = None  # {"image": lr, "text": lr}
    #: Image-text similarity targets, if the method learns them: dense (N, N) or factored. Entry
    #: [i, j] weighs caption j as a match of image i; evaluation trains with the loss `target_loss` names.
    soft_targets: Tensor | LowRankTargets | None = None
    source_indices: Tensor | None = None  # training pair indices, for coresets
    meta: dict[str, Any] = field(default_factory=dict)
    #: Whether `images` are canonical pixels (vlbench.pixels): set by `to_canonical`, never by a condenser.
    canonical: bool = False
    #: How the soft targets are read, a key of `train.TARGET_LOSSES`: "cross_entropy" (each row a
    #: distribution over captions) or "wbce" (each entry its own match probability, LoRS's loss).
    target_loss: str = "cross_entropy"

    def __post_init__(self):
        n = len(self.images)
        if self.text_features.shape[0] != n:
            raise ValueError(f"{n} images but {self.text_features.shape[0]} text features")
        if self.source_indices is not None and len(self.source_indices) != n:
            raise ValueError("one source index per pair is required")

    def __len__(self) -> int:
        return len(self.images)

    def target_tensors(self) -> dict[str, Tensor]:
        """The stored soft-target tensors by name: `soft_targets` (dense) or `soft_targets.<part>` (factored)."""
        if self.soft_targets is None:
            return {}
        if isinstance(self.soft_targets, LowRankTargets):
            return {f"soft_targets.{k}": v for k, v in self.soft_targets.tensors().items()}
        return {"soft_targets": self.soft_targets}

    def dense_targets(self) -> Tensor | None:
        """The (N, N) target matrix, whichever form is stored."""
        if isinstance(self.soft_targets, LowRankTargets):
            return self.soft_targets.dense()
        return self.soft_targets

    def describe_targets(self) -> dict[str, Any] | None:
        """What the record says about the soft targets (None: the set has none)."""
        if self.soft_targets is None:
            return None
        form = self.soft_targets.describe() if isinstance(self.soft_targets, LowRankTargets) else {"form": "dense"}
        return {**form, "loss": self.target_loss}

    @property
    def extra_bytes(self) -> int:
        """Storage beyond the N pairs themselves: learned lrs, and soft targets as stored (N·N dense; 2·N·r
        for factors, plus N for a diagonal)."""
        extra = 4 * len(self.learned_lrs or {})
        return extra + sum(t.numel() * t.element_size() for t in self.target_tensors().values())

    @property
    def storage_bytes(self) -> int:
        pairs = sum(t.numel() * t.element_size() for t in (self.images, self.text_features))
        return pairs + self.extra_bytes

    def tensors(self) -> dict[str, Tensor]:
        out = {"images": self.images, "text_features": self.text_features, **self.target_tensors()}
        if self.source_indices is not None:
            out["source_indices"] = self.source_indices
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def save(self, directory: Path) -> Path:
        """Write atomically: a reader sees the old set, or the complete new one."""
        from safetensors.torch import save_file

        from vlbench.storage import atomic_directory

        with atomic_directory(Path(directory)) as tmp:
            save_file(self.tensors(), str(tmp / "tensors.safetensors"))
            manifest = {
                "format": FORMAT,
                "pixels": {"space": CANONICAL if self.canonical else BACKBONE, "size": list(self.images.shape[-2:])},
                "num_pairs": len(self),
                "learned_lrs": self.learned_lrs,
                "soft_targets": self.describe_targets(),
                "storage_bytes": self.storage_bytes,
                "extra_bytes": self.extra_bytes,
                "meta": self.meta,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return Path(directory)

    @classmethod
    def load(cls, directory: Path) -> "CondensedSet":
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
            tensors = load_file(str(directory / "tensors.safetensors"))
        except (OSError, ValueError) as e:
            raise VLBenchError(f"cannot read condensed set at {directory}: {e}") from e
        if manifest.get("format", 1) > FORMAT:
            raise VLBenchError(f"condensed set at {directory} has format {manifest['format']}, newer than this vlbench "
                               f"reads ({FORMAT}): upgrade vlbench")
        # Format 1 (no "pixels"): saved before canonical pixels, in the condensing backbone's space;
        # the runner converts it with that backbone's normalisation (`to_canonical`) when it reuses it.
        canonical = manifest.get("pixels", {}).get("space") == CANONICAL
        factors = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("soft_targets.")}
        return cls(
            images=tensors["images"],
            text_features=tensors["text_features"],
            learned_lrs=manifest.get("learned_lrs"),
            soft_targets=LowRankTargets(**factors) if factors else tensors.get("soft_targets"),
            target_loss=(manifest.get("soft_targets") or {}).get("loss", "cross_entropy"),
            source_indices=tensors.get("source_indices"),
            meta=manifest.get("meta", {}),
            canonical=canonical,
        )

    def to_canonical(self, normalization: tuple[tuple[float, ...], tuple[float, ...]]) -> "CondensedSet":
        """This set with canonical pixels: mapped from the space `normalization` ((mean, std) of the
        backbone that condensed it) defines; a set that is canonical already comes back as it is."""
        if self.canonical:
            return self
        return dataclasses.replace(self, images=to_canonical(self.images, normalization), canonical=True)

    def pixels_for(self, backbone: "Backbone") -> Tensor:
        """The images as `backbone` takes them: resized to its resolution where it differs, normalised its way."""
        if not self.canonical:
            raise VLBenchError("the set's images are still in the condensing backbone's space: to_canonical() first")
        return for_backbone(self.images, backbone.image_size, backbone.normalization)

    @classmethod
    def from_indices(cls, train: Pairs, indices: Iterable[int], **meta: Any) -> "CondensedSet":
        """A coreset: the given training pairs, with their indices as provenance."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        images, text = train.select(idx)
        return cls(images=images.clone(), text_features=text.clone(), source_indices=idx, meta=dict(meta))


class Condenser(Configured, ABC):
    """A method that turns training pairs into `budget` pairs.

    Subclasses set `name`, may declare a `Config` dataclass (its fields are the options a user
    sets in YAML; `Configured`), and declare which extras beyond the pairs they store.
    """

    kind = "condenser"
    name: ClassVar[str]
    #: Extras this condenser may put in a CondensedSet, counted against its budget on the board.
    extras: ClassVar[frozenset[str]] = frozenset()  # subset of {"learned_lrs", "soft_targets"}
    #: The full-data reference: nothing is condensed, evaluation trains on all training pairs.
    trains_on_full_data: ClassVar[bool] = False
    #: Shared stages `condense` uses (e.g. {"reference_model"}): cached work that a sweep computes
    #: once, before the runs that need it (vlbench/stages.py; plugins register them by name).
    requires: ClassVar[frozenset[str]] = frozenset()
    #: The version of the code that condenses (vlbench/versions.py), part of the condensed sets' key;
    #: None: the plugin distribution's version alone names it (a third party's releases).
    code_version: ClassVar[CodeVersion | None] = None

    #: Options added after runs were recorded, with the value those runs had: at that value an option
    #: stays out of the condensed sets' keys and the records' config hashes, so those runs keep theirs.
    added_later: ClassVar[dict[str, Any]] = {}

    def config_dict(self) -> dict[str, Any]:
        return without_added_later(dataclasses.asdict(self.config), self.added_later)

    def bounded_pixels(self) -> bool:
        """Whether its images stay in the valid image range (checked before caching); a method that
        deliberately lets pixels leave it (the official trajectory-matching code) returns False."""
        return True

    def evaluation_protocol(self, num_pairs: int, protocol: TrainProtocol) -> TrainProtocol:
        """How an evaluation model trains on this condenser's set: the table's protocol, unchanged.
        (The full-data reference trains longer; the record keeps what was used.)"""
        return protocol

    @abstractmethod
    def condense(self, ctx: CondenseContext) -> CondensedSet:
        """Return exactly `ctx.budget` pairs."""

