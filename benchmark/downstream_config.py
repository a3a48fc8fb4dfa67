"""Configuration of the downstream tasks (the ``downstream`` section): the shared training
settings (``downstream.train``), each task's model and its own training settings
(``downstream.<task>.train``, over the shared ones), and ``augment``."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from benchmark.config_checks import check_precision, positive

Optimizer = Literal["adamw", "sgd"]
Scheduler = Literal["cosine", "constant", "poly", "plateau"]


@dataclass
class TrainConfig:
    """Nuisance hyperparameters of every downstream training run."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    epochs: int = 30
    # 0: an epoch is one pass over the training set, so a cell with more images (a higher
    # ratio, a larger real fraction) also takes more optimiser steps. N: every epoch is N
    # steps whatever the set's size, so that the cells of one comparison get equal updates
    # and differ only in their data (docs/RESULTS.md shows the confound this removes).
    steps_per_epoch: int = 0
    patience: int = 10  # early stopping on the validation metric
    # AdamW (decoupled weight decay; DE's segmentation, SB), or SGD with momentum and L2
    # weight decay (DE's classification; nnU-Net: lr 1e-2, momentum 0.99, nesterov, poly).
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    # The learning rate per epoch: cosine to 0 over epochs, constant, poly (nnU-Net's
    # (1 - epoch / epochs) ** 0.9), or plateau: multiplied by plateau_factor whenever the
    # validation selection score has not improved for plateau_patience epochs (SB: 0.1, 5).
    scheduler: Scheduler = "cosine"
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    # Mixed precision on CUDA, as generator.precision (CPU runs are float32).
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    # An epoch whose mean loss exceeds this multiple of the first epoch's has diverged: the
    # cell fails with that reason instead of reporting a broken model's score.
    divergence_factor: float = 100.0

    def __post_init__(self) -> None:
        positive(self, "downstream.train", "lr", "batch_size", "epochs", "patience")
        if self.steps_per_epoch < 0:
            raise ValueError(
                "downstream.train.steps_per_epoch must be >= 0 (0: one pass over the data), "
                f"got {self.steps_per_epoch}"
            )
        if not self.divergence_factor > 1:
            raise ValueError("downstream.train.divergence_factor must be > 1")
        if self.weight_decay < 0:
            raise ValueError("downstream.train.weight_decay must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"downstream.train.momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ValueError("downstream.train.nesterov needs optimizer sgd with momentum > 0")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(
                f"downstream.train.plateau_factor must be in (0, 1), got {self.plateau_factor}"
            )
        if self.plateau_patience < 0:
            raise ValueError(
                f"downstream.train.plateau_patience must be >= 0, got {self.plateau_patience}"
            )
        check_precision("downstream.train", self.precision)

    def images_per_epoch(self, n_images: int) -> int:
        """Training images one epoch presents from a set of ``n_images``."""
        if not self.steps_per_epoch:
            return n_images
        return self.steps_per_epoch * min(self.batch_size, n_images)


def _all_optional(cls: type, name: str, doc: str) -> type:
    """A dataclass with ``cls``'s fields, each optional and ``None`` by default: a partial
    override of a ``cls`` that the loader checks key by key like any other section."""
    hints = typing.get_type_hints(cls)
    fields = [(f.name, hints[f.name] | None, field(default=None)) for f in dataclasses.fields(cls)]
    # Its module is this one, where ``name`` is bound: pickle finds the class there (a
    # config goes to every worker process).
    namespace = {"__doc__": doc, "__module__": __name__}
    return dataclasses.make_dataclass(name, fields, namespace=namespace)


# downstream.<task>.train: what one task trains with differently from downstream.train.
# The tasks differ in what suits them (on the controls phantom cls wants a tenth of seg's
# learning rate, docs/DOWNSTREAM.md; SB trained CLIPSeg at 2e-3 and CRIS at 2e-5), so a
# grid of several tasks needs a setting per task, not one for all.
TrainOverrides = _all_optional(
    TrainConfig,
    "TrainOverrides",
    "Values of downstream.train that one task replaces; null keeps downstream.train's.",
)


# nnU-Net's 2D topology rules (downstream.seg.plan: nnunet): the first level's width, the
# widest level, and the smallest side a level may reach.
_NNUNET_BASE, _NNUNET_MAX, _NNUNET_MIN_SIDE = 32, 512, 4
_DEFAULT_SEG_CHANNELS = [16, 32, 64, 128]


def nnunet_plan(size: int) -> tuple[list[int], int]:
    """nnU-Net's 2D network for ``size`` x ``size`` images: the channels per level and the
    lower outputs it supervises. Levels halve the side while it stays at least 4 px (and
    divides evenly: nnU-Net pads instead); widths start at 32 and double, up to 512; every
    decoder output but the lowest is supervised, the full one included. 64 px: [32, 64, 128,
    256, 512] and 2; 128 px: [32, 64, 128, 256, 512, 512] and 3; 256 px: seven levels and 4."""
    halvings = 0
    while size % 2 ** (halvings + 1) == 0 and size // 2 ** (halvings + 1) >= _NNUNET_MIN_SIDE:
        halvings += 1
    channels = [min(_NNUNET_BASE * 2**i, _NNUNET_MAX) for i in range(halvings + 1)]
    return channels, max(len(channels) - 3, 0)


@dataclass
class SegModelConfig:
    """The seg task: a network for 4-class segmentation, and its training settings.

    ``network``: ``unet``, MONAI's ``UNet`` (DE's; residual units with
    ``num_res_units`` > 0), or ``dynunet``, MONAI's ``DynUNet``, nnU-Net's 2D network
    (3x3 convolutions, instance norm, leaky ReLU, strided downsampling; residual blocks
    when ``num_res_units`` > 0, nnU-Net's plain ones at 0). ``channels`` are the widths
    per resolution level, each level halving the side ([16, 32, 64, 128] when left out).
    ``deep_supervision`` (dynunet only): the number of lower-resolution outputs supervised
    besides the full one, as nnU-Net does (0, off, when left out). ``plan: nnunet``
    (dynunet only) sets what is left out of the two from ``data.size`` by nnU-Net's rules
    (:func:`nnunet_plan`, applied by the config: ``plan_for``); channels given must be the
    plan's."""

    train: TrainOverrides = field(default_factory=TrainOverrides)
    network: Literal["unet", "dynunet"] = "unet"
    plan: Literal["manual", "nnunet"] = "manual"
    channels: list[int] | None = None
    num_res_units: int = 1
    dropout: float = 0.0
    deep_supervision: int | None = None

    def __post_init__(self) -> None:
        if self.plan == "nnunet" and self.network != "dynunet":
            raise ValueError(
                "downstream.seg.plan nnunet plans nnU-Net's network: set"
                " downstream.seg.network: dynunet"
            )
        if self.plan == "manual":
            self.channels = list(_DEFAULT_SEG_CHANNELS) if self.channels is None else self.channels
            self.deep_supervision = self.deep_supervision or 0
        self._check()

    def _check(self) -> None:
        """The values set so far (under plan: nnunet, channels may wait for ``plan_for``)."""
        if self.channels is not None and (
            len(self.channels) < 2 or any(c <= 0 for c in self.channels)
        ):
            raise ValueError("downstream.seg.channels needs >= 2 positive integers")
        if not 0 <= self.dropout < 1:
            raise ValueError("downstream.seg.dropout must be in [0, 1)")
        if self.num_res_units < 0:
            raise ValueError(f"downstream.seg.num_res_units must be >= 0, got {self.num_res_units}")
        if self.channels is None:
            return
        if self.network == "dynunet" and len(self.channels) < 3:
            raise ValueError("downstream.seg.network dynunet needs >= 3 levels in channels")
        if self.deep_supervision and self.network != "dynunet":
            raise ValueError("downstream.seg.deep_supervision needs network: dynunet")
        # DynUNet supervises the outputs of its upsampling levels but the lowest one.
        most = max(len(self.channels) - 2, 0)
        if self.deep_supervision is not None and not 0 <= self.deep_supervision <= most:
            raise ValueError(
                f"downstream.seg.deep_supervision must be in [0, {most}] for "
                f"{len(self.channels)} levels in channels, got {self.deep_supervision}"
            )

    def plan_for(self, size: int) -> None:
        """Under ``plan: nnunet``, set ``channels`` and ``deep_supervision`` where left out
        to nnU-Net's plan for ``size`` (``data.size``) px; a ``channels`` given must be it."""
        if self.plan != "nnunet":
            return
        channels, supervised = nnunet_plan(size)
        if self.channels is not None and self.channels != channels:
            raise ValueError(
                f"downstream.seg.channels {self.channels} is not nnU-Net's plan for data.size"
                f" {size}, {channels}: leave it out (null, --set downstream.seg.channels=null)"
                " or set downstream.seg.plan: manual"
            )
        self.channels = channels
        self.deep_supervision = (
            supervised if self.deep_supervision is None else self.deep_supervision
        )
        self._check()

    def downsampling(self) -> int:
        """How many times the network halves the side: the image side must divide by
        2 to that power."""
        return len(self.channels) - 1

    def check_size(self, size: int) -> None:
        """``size`` (``data.size``) is one the network's levels can halve; otherwise the
        first forward pass would fail on a skip connection's shape."""
        halvings = self.downsampling()
        if size % 2**halvings:
            raise ValueError(
                f"data.size {size} must divide by 2**{halvings} = {2**halvings}: "
                f"downstream.seg.channels has {halvings + 1} levels, each halving the side"
            )


@dataclass
class ClsModelConfig:
    """The cls task: a MONAI classifier for ED vs ES (DE's task), or view / image quality,
    and its training settings."""

    train: TrainOverrides = field(default_factory=TrainOverrides)
    target: Literal["phase", "view", "quality"] = "phase"
    network: Literal["classifier", "resnet18"] = "classifier"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # classifier only
    num_res_units: int = 1
    dropout: float = 0.0
    # What early stopping and the best checkpoint follow: the validation cross-entropy, or
    # accuracy (which moves in steps of 1/n on a small validation set; docs/DOWNSTREAM.md).
    select_on: Literal["loss", "accuracy"] = "loss"

    def __post_init__(self) -> None:
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError("downstream.cls.channels needs positive integers")
        if not 0 <= self.dropout < 1:
            raise ValueError("downstream.cls.dropout must be in [0, 1)")


@dataclass
class VLSegModelConfig:
    """Prompted binary segmentation. ``film`` (the offline default): a FiLM-conditioned
    encoder-decoder on frozen prompt embeddings (``text_encoder``: ``minilm``, the packaged
    model, or a local folder). ``clipseg``: transformers' CLIPSeg from ``clipseg_path``.
    ``cris``: a CRIS-style decoder on the CLIP encoders in ``clip_path``. ``train``: the
    task's training settings."""

    train: TrainOverrides = field(default_factory=TrainOverrides)
    model: Literal["film", "clipseg", "cris"] = "film"
    text_encoder: str = "minilm"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # film only
    clipseg_path: str | None = None
    clip_path: str | None = None
    cris_dim: int = 256  # cris: width of the vision-language decoder
    freeze_backbone: bool = True  # clipseg, cris: train the decoder only

    def __post_init__(self) -> None:
        if self.model == "clipseg" and not self.clipseg_path:
            raise ValueError("downstream.vlseg.clipseg_path is required when model is clipseg")
        if self.model == "cris" and not self.clip_path:
            raise ValueError("downstream.vlseg.clip_path is required when model is cris")
        if self.cris_dim < 8 or self.cris_dim % 4:
            raise ValueError("downstream.vlseg.cris_dim must be a multiple of 4 and >= 8")
        if len(self.channels) < 2 or any(c <= 0 for c in self.channels):
            raise ValueError("downstream.vlseg.channels needs >= 2 positive integers")
        if not self.text_encoder:
            raise ValueError("downstream.vlseg.text_encoder must not be empty")


DOWNSTREAM_TASKS = ("seg", "cls", "vlseg")


@dataclass
class DownstreamConfig:
    """The downstream tasks. ``train`` is every task's training; ``<task>.train`` replaces
    any of its values for that task alone (:meth:`train_for`)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    seg: SegModelConfig = field(default_factory=SegModelConfig)
    cls: ClsModelConfig = field(default_factory=ClsModelConfig)
    vlseg: VLSegModelConfig = field(default_factory=VLSegModelConfig)
    augment: bool = True

    def __post_init__(self) -> None:
        for task in DOWNSTREAM_TASKS:
            self.train_for(task)  # a bad value is refused at load, named by its task

    def train_for(self, task: Any) -> TrainConfig:
        """What ``task`` (a name or a ``benchmark.grid.Task``) trains with: ``train`` with
        the task's non-null ``<task>.train`` values over it."""
        name = getattr(task, "value", task)
        changes = {k: v for k, v in asdict(getattr(self, name).train).items() if v is not None}
        if not changes:
            return self.train
        try:
            return dataclasses.replace(self.train, **changes)
        except ValueError as exc:  # TrainConfig names its section downstream.train
            raise ValueError(
                str(exc).replace("downstream.train.", f"downstream.{name}.train.")
            ) from None

    def task_settings(self, task: Any) -> dict:
        """Every setting that decides how ``task`` trains and what it trains, as plain data
        (a stage key's part): its model section without ``train``, the resolved training
        settings and ``augment``. Other tasks' settings are not in it, so changing them
        recomputes none of this task's results."""
        name = getattr(task, "value", task)
        # `plan` decides nothing the planned channels do not: keys stay as they were.
        model = {k: v for k, v in asdict(getattr(self, name)).items() if k not in ("train", "plan")}
        return {"model": model, "train": asdict(self.train_for(name)), "augment": self.augment}
