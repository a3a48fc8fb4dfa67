"""Typed configuration: one dataclass per component, loaded strictly from YAML.

``load_config(path, overrides)`` reads a preset from ``configs/``, applies dotted
``--set a.b=value`` overrides (values parsed as YAML, so ``[0.5,1]`` is a list), rejects
unknown keys and ill-typed or impossible values with a message naming the file and the key,
and returns a frozen-by-convention :class:`Config`. ``to_dict`` gives the resolved config
that is saved beside every result and hashed into stage keys.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from benchmark.config_checks import check_precision, non_negative, positive
from benchmark.data.config import DataConfig
from benchmark.downstream_config import DownstreamConfig, Optimizer, Scheduler
from benchmark.grid import GridConfig, Task


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names where and what."""


@dataclass
class GeneratorConfig:
    """Diffusion generator shared by every mode (architecture, training and sampling)."""

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    attention: bool = False  # self-attention in the lowest-resolution blocks
    joint_mask: bool = True  # emit the label map as extra channels (mask-free modes)
    # The label channels' share of a joint sample's denoising loss, the image having the
    # rest. 0.8 is the plain mean over the 1 + 4 channels, which left the image noisy.
    joint_label_share: float = 0.5
    class_conditional: bool = False  # unconditional mode: condition on view x phase
    # Unconditional mode: one model per view x phase class instead (DE's), each trained for
    # train_steps on its class's images; exclusive with class_conditional.
    per_class_models: bool = False
    timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    # What the UNet predicts: the velocity (Salimans & Ho 2022) or the added noise (DDPM,
    # the diffusers examples' default). Noise-trained models left the phantom's black
    # background grey, as their loss barely weighs the image at high noise (docs/GENERATORS.md).
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    # Sampling: where the solver's steps sit. trailing starts at the last training step,
    # pure noise (Lin et al. 2023); leading (diffusers' default) below it.
    timestep_spacing: Literal["leading", "trailing"] = "trailing"
    # Sampling: clip the clean-image estimate to [-1, 1] at every DDPM / DDIM step (diffusers'
    # default; DPM-Solver++ never clips). Clipping cuts only the low side of the estimate's
    # error at the black background (-1), and the bias carried along the trajectory left it
    # grey (docs/GENERATORS.md); the finished images are clipped either way.
    clip_sample: bool = False
    train_steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-2
    # EMA as diffusers' EMAModel with warmup: the decay of optimiser step s is
    # min(ema_decay, 1 - s ** -ema_power), so ema_decay is a cap (the diffusers
    # example's --ema_max_decay) reached only after (1 - ema_decay) ** (-1 / ema_power) steps
    # (0.999 at power 2/3: 31,600 steps). The decay reached is saved with the generator.
    ema_decay: float = 0.999
    ema_power: float = 2 / 3  # EMAModel's default; the diffusers example uses 3/4
    grad_clip: float = 1.0
    # Every this many steps the training is saved beside its stage and a killed run resumes
    # from the last save (generators/resume.py); 0: never. Not in any key: a resumed
    # training is the one that was never stopped.
    checkpoint_every: int = 0
    sampler: Literal["ddpm", "ddim", "dpmsolver++"] = "ddim"
    sample_steps: int = 50
    sample_batch_size: int = 64
    n_samples: int | None = None  # None: enough for the grid's largest ratio
    seed: int = 0
    # Prompted modes (text, hybrid): frozen prompt encoder whose token states feed the UNet's
    # cross-attention ("minilm" or a local model folder).
    text_encoder: str = "minilm"
    # Resolution levels of the text UNet with cross-attention, counted from the lowest;
    # None: every level but the highest-resolution one (where attention costs most).
    cross_attention_levels: int | None = None
    cond_dropout: float = 0.1  # training: share of prompts replaced by "" (classifier-free)
    guidance_scale: float = 2.0  # sampling: classifier-free guidance weight (1 = none)
    # per_kind: one model per prompt kind; all_kinds: one model trained on every kind's
    # prompts (P0-P7), sampled at the cell's kind.
    text_training: Literal["per_kind", "all_kinds"] = "per_kind"
    mask_copies: int = 5  # mask-guided modes: perturbed copies per training label map (SB)
    # hybrid: how the label map enters the text UNet. concat: one-hot channels concatenated
    # to its noisy input; controlnet: a diffusers ControlNetModel beside a text UNet trained
    # first on image + prompt (generators/controlnet.py).
    hybrid_variant: Literal["concat", "controlnet"] = "concat"
    # Mixed precision on CUDA (CPU runs are float32): bf16 autocast (the default; Ampere and
    # later), fp16 autocast with loss scaling (older GPUs without bf16), or fp32. Part of the
    # generator's key: the weights differ.
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    # Speed options, on CUDA only (generators/acceleration.py); not part of any stage key.
    channels_last: bool = True  # NHWC weights and activations (training and sampling)
    compile: bool = False  # torch.compile the denoiser (training and sampling)
    cuda_graphs: bool = True  # sampling: replay one captured CUDA graph per denoiser call
    preload: bool = True  # training tensors held on the device

    def __post_init__(self) -> None:
        positive(
            self,
            "generator",
            "layers_per_block",
            "timesteps",
            "train_steps",
            "batch_size",
            "lr",
            "sample_steps",
            "sample_batch_size",
        )
        non_negative(self, "generator", "weight_decay", "seed", "checkpoint_every")
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise ValueError("generator.block_out_channels must be positive integers")
        levels = self.cross_attention_levels
        if levels is not None and not 1 <= levels <= len(self.block_out_channels):
            raise ValueError(
                f"generator.cross_attention_levels must be in [1, "
                f"{len(self.block_out_channels)}] (the levels of block_out_channels), got {levels}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"generator.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.ema_power <= 1:
            raise ValueError(f"generator.ema_power must be in (0, 1], got {self.ema_power}")
        if self.sample_steps > self.timesteps:
            raise ValueError("generator.sample_steps cannot exceed generator.timesteps")
        if self.n_samples is not None and self.n_samples < 1:
            raise ValueError(f"generator.n_samples must be >= 1, got {self.n_samples}")
        if not self.text_encoder:
            raise ValueError("generator.text_encoder must be 'minilm' or a local model folder")
        if not 0 < self.joint_label_share < 1:
            raise ValueError(
                f"generator.joint_label_share must be in (0, 1), got {self.joint_label_share}"
            )
        if not 0 <= self.cond_dropout < 1:
            raise ValueError(f"generator.cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.guidance_scale < 0:
            raise ValueError(f"generator.guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.text_training not in ("per_kind", "all_kinds"):
            raise ValueError(
                f"generator.text_training must be per_kind or all_kinds, got {self.text_training!r}"
            )
        if self.class_conditional and self.per_class_models:
            raise ValueError(
                "generator.class_conditional and generator.per_class_models are exclusive: "
                "one model conditioned on the class, or one model per class"
            )
        if self.mask_copies < 1:
            raise ValueError(f"generator.mask_copies must be >= 1, got {self.mask_copies}")
        if self.hybrid_variant not in ("concat", "controlnet"):
            raise ValueError(
                "generator.hybrid_variant must be concat or controlnet, "
                f"got {self.hybrid_variant!r}"
            )
        check_precision("generator", self.precision)


@dataclass
class SweepConfig:
    """How the grid is dispatched (an Optuna study is the work queue) and nuisance tuning."""

    storage: str | None = None  # Optuna storage URL; None: sqlite:///<out>/optuna.db
    workers: int = 1  # local worker processes (other machines run the same command)
    # Up to this many seeds of one cell are claimed together and trained as one batched
    # model ensemble (downstream/ensemble.py): a GPU that one small model leaves idle runs
    # several in the same kernels. 1: one cell at a time. Results equal the one-at-a-time
    # ones up to float rounding; not with tune_scope cell (each cell its own settings).
    ensemble: int = 1
    # A worker beats every heartbeat_interval s; a cell whose worker is silent for
    # grace_period s goes back to the queue, at most max_retries times per sweep.
    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retries: int = 3
    # Nuisance tuning of each task's training (lr, weight_decay, batch_size, epochs; the
    # optimizer and scheduler where listed below) with TPE and a median pruner:
    # "reference" tunes once per task on its real-only reference cell and every cell of the
    # task uses the winners (downstream.<task>.train); "cell" gives every cell its own study
    # with the same budget of tune_trials.
    tune: bool = False
    tune_scope: Literal["reference", "cell"] = "reference"
    tune_trials: int = 20
    tune_startup_trials: int = 5  # trials before the pruner may prune
    tune_seed: int = 0
    tune_lr: list[float] = field(default_factory=lambda: [1e-4, 1e-2])  # [low, high], log
    tune_weight_decay: list[float] = field(default_factory=lambda: [1e-6, 1e-2])  # log
    tune_batch_sizes: list[int] = field(default_factory=lambda: [8, 16, 32])
    tune_epochs: list[int] = field(default_factory=lambda: [10, 30])  # [low, high]
    # The recipe, searched too when listed (e.g. [adamw, sgd], [cosine, poly, plateau]);
    # empty: each task keeps its own optimizer and scheduler.
    tune_optimizers: list[Optimizer] = field(default_factory=list)
    tune_schedulers: list[Scheduler] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = ("workers", "ensemble", "heartbeat_interval", "grace_period", "tune_trials")
        positive(self, "sweep", *names)
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"sweep.grace_period ({self.grace_period}) must exceed "
                f"sweep.heartbeat_interval ({self.heartbeat_interval})"
            )
        non_negative(self, "sweep", "max_retries", "tune_startup_trials", "tune_seed")
        for name in ("tune_lr", "tune_weight_decay", "tune_epochs"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
                raise ValueError(f"sweep.{name} must be [low, high] with 0 < low <= high")
        if not self.tune_batch_sizes or any(b <= 0 for b in self.tune_batch_sizes):
            raise ValueError("sweep.tune_batch_sizes must be positive integers")


@dataclass
class TrackingConfig:
    uri: str | None = None  # MLflow tracking URI; None: sqlite:///<out>/mlflow.db
    experiment: str | None = None  # None: the config's name


# What a report's paired tests pair (`reports.stats.TEST_UNITS`, which a test holds equal).
TestUnit = Literal["image", "patient"]


@dataclass
class ReportConfig:
    """How the report's tables test a cell against its real-only baseline."""

    # What a paired test pairs: "image", each test image, or "patient", the mean over each
    # test patient's images. A patient's images share its anatomy, so they are not
    # independent samples and pairing images makes p smaller than the patients support;
    # pairing patients needs enough of them (two-sided p >= 2 / 2**n for n patients).
    test_unit: TestUnit = "image"


@dataclass
class FidelityConfig:
    """Fidelity of every synthetic set, in the features of an echo encoder trained on the
    real training split, and with InceptionV3's FID weights from a local file when given
    (they are not available offline)."""

    enabled: bool = True
    encoder_steps: int = 300  # training steps of the echo encoder (view x phase classifier)
    k: int = 3  # neighbours of improved precision / recall
    # Real-trained judges, built with downstream's seg / cls models and training loop on the
    # real training split (validation picks the checkpoint); 0 turns the metric off.
    segmenter_epochs: int = 20  # mask alignment: Dice of its prediction vs the image's label
    quality_epochs: int = 20  # conditioning fidelity of image quality (Good/Medium/Poor)
    # A local file of InceptionV3's FID weights (torch-fidelity's
    # weights-inception-2015-12-05-6726825d.pth, or it as .safetensors): the standard FID and
    # KID are measured too (benchmark/inception.py; needs the `fid` extra). None: echo
    # encoder distances only.
    inception_weights: str | None = None

    def __post_init__(self) -> None:
        positive(self, "fidelity", "encoder_steps", "k")
        if self.inception_weights is not None and not str(self.inception_weights).strip():
            raise ValueError("fidelity.inception_weights must be a file path or null, got ''")
        for name in ("segmenter_epochs", "quality_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"fidelity.{name} must be >= 0, got {getattr(self, name)}")


SAMPLERS = ("ddpm", "ddim", "dpmsolver++")


def parse_sampler(spec: str) -> tuple[str, int]:
    """``"dpmsolver++:20"`` -> ``("dpmsolver++", 20)``; ValueError names the bad part."""
    name, _, steps = spec.partition(":")
    if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise ValueError(
            f"bench.samplers: {spec!r} must be <sampler>:<steps> with sampler in "
            f"{list(SAMPLERS)} and steps >= 1"
        )
    return name, int(steps)


@dataclass
class BenchConfig:
    """Sizes and speed options of ``python -m benchmark bench`` (docs/PERFORMANCE.md).

    Each project path is timed beside a plain reference loop on the same model and data.
    The bench always runs on the built-in phantom at ``data.size`` (no dataset needed). The
    speed options act on CUDA only; on CPU they are off and the figures measure the plain
    paths.
    """

    patients: int = 8  # phantom patients of the bench's data (4 images each)
    # Generator UNet; None: generator.block_out_channels. The diffusers unconditional
    # example's 128 px UNet is [128, 128, 256, 256, 512, 512].
    block_out_channels: list[int] | None = None
    warmup_steps: int = 2  # untimed generator steps before each timed run (kernels, compile)
    train_steps: int = 10  # timed generator training steps, on each path
    # Untimed project training steps after the timed ones, so that the samplers compare
    # images of a model that has learnt something (their Fréchet distances judge fidelity).
    sample_train_steps: int = 0
    # Sampler:steps pairs timed against the reference, DDIM at reference_steps in a plain
    # diffusers DDIMPipeline. The generator they sample is the one trained above.
    samplers: list[str] = field(
        default_factory=lambda: ["ddim:50", "ddim:20", "dpmsolver++:20", "dpmsolver++:10"]
    )
    reference_steps: int = 50
    sample_images: int = 32  # images per sampler; their Fréchet distance judges fidelity
    # Bootstrap resamples of each sampler's FD ratio interval (95 %; 0: none).
    fd_resamples: int = 200
    downstream_epochs: int = 2  # epochs of each timed downstream training (seg task)
    ensemble_members: int = 4  # cells trained at once by downstream.ensemble vs one by one
    # Also train those cells in as many worker processes at once (as sweep.workers does).
    processes: bool = True
    fidelity_images: int = 64  # synthetic-set size of the timed fidelity figures
    tracking_repeats: int = 3  # cells logged to MLflow; the mean is reported
    # Speed options (CUDA only)
    channels_last: bool = True  # NHWC memory format for the conv nets
    fused_adamw: bool = True  # downstream: torch's fused AdamW kernel
    compile: bool = False  # torch.compile the generator UNet (training and sampling)
    cuda_graphs: bool = True  # sampling: replay one captured CUDA graph per denoiser call
    preload: bool = True  # generator training data held on the device
    peak_tflops: float | None = None  # bf16 dense peak for MFU; None: known-GPU table
    # CUDA only: time each generator reference again under bf16 autocast (the diffusers
    # example's --mixed_precision bf16), beside the float32 one (the example's default).
    bf16_references: bool = True

    def __post_init__(self) -> None:
        positive(
            self,
            "bench",
            "patients",
            "train_steps",
            "reference_steps",
            "sample_images",
            "downstream_epochs",
            "ensemble_members",
            "fidelity_images",
            "tracking_repeats",
        )
        if self.patients < 3:
            raise ValueError(f"bench.patients must be >= 3 (train/val/test), got {self.patients}")
        for name in ("warmup_steps", "sample_train_steps", "fd_resamples"):
            if getattr(self, name) < 0:
                raise ValueError(f"bench.{name} must be >= 0, got {getattr(self, name)}")
        if self.block_out_channels is not None and (
            not self.block_out_channels or any(c <= 0 for c in self.block_out_channels)
        ):
            raise ValueError("bench.block_out_channels must be positive integers (or null)")
        if not self.samplers:
            raise ValueError("bench.samplers must not be empty")
        for spec in self.samplers:
            parse_sampler(spec)
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ValueError(f"bench.peak_tflops must be > 0, got {self.peak_tflops}")


@dataclass
class Config:
    name: str = "quick"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch in "-_" for ch in self.name):
            raise ValueError(f"name must be letters, digits, '-' or '_', got {self.name!r}")
        self.downstream.seg.plan_for(self.data.size)
        # The seg network trains for seg cells and as the fidelity stage's segmenter.
        judged = self.fidelity.enabled and self.fidelity.segmenter_epochs > 0
        if Task.SEG in self.grid.values("tasks") or judged:
            self.downstream.seg.check_size(self.data.size)


_DECIMAL = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


# ----------------------------------------------------------------------------- conversion


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from plain data, checking keys and types recursively.

    ``where`` is the dotted path used in error messages (``""`` at the root).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        names = ", ".join(_join(where, k) for k in unknown)
        raise ConfigError(f"unknown key(s) {names}; valid keys here: {', '.join(sorted(fields))}")
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            valid = [m.value for m in tp]
            raise ConfigError(f"{where}: {value!r} is not one of {valid}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 (PyYAML) reads 3e-4, without a dot, as a string; it is a number here.
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan and .inf
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # a programming error, not user input


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-safe data of a config (enums by value)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


# ----------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping: PyYAML keeps the last
    silently, so a preset's second ``data:`` section would drop the first's settings."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"key {key!r} repeated (first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _load_yaml(text: str) -> Any:
    """Plain data of YAML ``text``, refusing repeated keys."""
    loader = _UniqueKeyLoader(text)  # what yaml.load does, with this SafeLoader subclass
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: cannot parse value ({_yaml_problem(exc)})") from None
    return path, value


def _yaml_problem(exc: yaml.YAMLError, where: bool = False) -> str:
    """One line saying what is wrong; with ``where``, ``" at line L, column C: ..."``."""
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        # safe_load builds plain data only; say so instead of "could not determine a
        # constructor", which reads like a bug.
        tag = problem.rsplit(" the tag ", 1)[-1].strip("'\"").replace("tag:yaml.org,2002:", "!!")
        problem = f"tag {tag} is not allowed (configs are plain YAML: no Python objects)"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if where and context and start is not None:  # e.g. an unclosed bracket: where it opened
        problem += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
    if where:
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{at}: {problem}"
    return problem


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each dotted override into a copy of ``data`` (creating nested mappings)."""
    out = yaml.safe_load(yaml.safe_dump(data))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return out


def folder_config(run_dir: str | Path) -> Config | None:
    """The resolved config a sweep folder holds (its ``config.yaml``); None without one."""
    path = Path(run_dir) / "config.yaml"
    return load_config(path) if path.is_file() else None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML preset (``None``: the built-in defaults) and apply overrides."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
        try:
            data = _load_yaml(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML{_yaml_problem(exc, where=True)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    overrides = overrides or []
    merged = apply_overrides(data, overrides)  # its errors name the override
    try:
        return from_dict(Config, merged)
    except ConfigError as exc:
        raise ConfigError(f"{_blame(data, overrides, exc, source)}: {exc}") from None


def _blame(data: dict, overrides: list[str], exc: ConfigError, source: str) -> str:
    """What a config error comes from: ``source`` (the file) with the overrides whose key
    it names; the file alone when none is named and the file fails without them too."""
    named = [o for o in overrides if o.split("=", 1)[0].strip() in str(exc)]
    if not named and overrides:
        try:
            from_dict(Config, data)
        except ConfigError:
            return source
        named = overrides
    return f"{source} with --set {' '.join(named)}" if named else source


def dump_config(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
