"""Training and sampling shared by the conditional modes (text, semantic, hybrid).

One class, :class:`ConditionalGenerator`, configured by what conditions the model:

- ``prompts``: the image's prompt (:func:`benchmark.prompts.prompts_for`, image level) as
  frozen per-token encoder states read by cross-attention (``UNet2DConditionModel``), with
  prompt dropout to the empty prompt in training and classifier-free guidance in sampling;
- ``masks``: the one-hot label map concatenated to the noisy image as input channels; in
  sampling the maps are perturbed copies of training maps
  (:func:`benchmark.data.conditioning.perturb_masks`) and become the images' labels.

Without masks the model emits the label map jointly with the image (:mod:`generators.joint`).
Each synthetic image inherits the metadata of the real training image it was conditioned on
(the prompt's source image, or the conditioning map's source image), named in the manifest
column ``parent_patient``.

Training is three steps a mode may override one by one: :meth:`ConditionalGenerator.
training_set` (tensors and prompt tables, :class:`TrainingSet`, whose ``batches`` every model
of these modes trains on), :meth:`~ConditionalGenerator.fit` (model and training; the hybrid
mode's ControlNet variant replaces it, :mod:`generators.controlnet`) and
:meth:`~ConditionalGenerator.settings` (what ``echosynth.json`` records).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import DiffusionPipeline

from benchmark.config import GeneratorConfig
from benchmark.data.conditioning import perturb_masks
from benchmark.data.config import DataConfig
from benchmark.data.records import EchoData
from benchmark.prompts import KINDS, prompts_for
from benchmark.runtime import resolve_device
from benchmark.text_encoder import load_text_encoder
from generators import diffusion, joint
from generators.acceleration import Acceleration
from generators.base import IMAGE_LABELS, GenerationContext, check_label, synthetic_meta
from generators.pipelines import EchoDiffusionPipeline, load_pipeline, mask_channels

SETTINGS_FILE = "echosynth.json"
# Attributes a synthetic image takes over from the real image that conditioned it: all.
INHERITED = IMAGE_LABELS


def inherited_meta(source: pd.DataFrame, label_source: str, **columns: object) -> pd.DataFrame:
    """Synthetic rows (new patient ids, split train) with ``source``'s attributes."""
    inherited = {c: source[c].to_numpy() for c in INHERITED if c in source.columns}
    return synthetic_meta(len(source), label_source, **inherited, **columns)


def balanced_picks(n: int, pool: int, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` indices into ``range(pool)``: whole shuffled passes, so every item is used
    equally often (up to one)."""
    if pool < 1:
        raise ValueError("nothing to condition on: the training set is empty")
    passes = -(-n // pool)
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:n]


def training_prompts(real: EchoData, kinds: list[int], policy: str, seed: int) -> list[list[str]]:
    """``[kind][image]`` prompts of every training image at each kind."""
    return [prompts_for(real, k, policy=policy, seed=seed) for k in kinds]


@dataclass
class TrainingSet:
    """What a conditional model trains on, built once from the real training images.

    ``x0`` ``(N, C, H, W)`` in [-1, 1] (the image, plus the joint label channels when no
    map conditions the model); ``cond`` ``(N, 4, H, W)`` one-hot conditioning maps or None;
    prompted models: ``states`` ``(P, L, dim)`` and ``attn`` ``(P, L)`` token states of every
    distinct prompt (padded to the longest, ``L``), ``index`` ``(K, N)`` the prompt of image
    ``n`` at kind ``kinds[k]``, ``empty`` the position of the empty prompt.
    """

    x0: torch.Tensor
    cond: torch.Tensor | None
    kinds: list[int]
    states: torch.Tensor | None = None
    attn: torch.Tensor | None = None
    index: torch.Tensor | None = None
    empty: int = 0

    def placed(self, speed: Acceleration, device: torch.device) -> TrainingSet:
        """This set with its tensors on ``device`` when ``speed.preload`` (else itself)."""
        if not speed.preload:
            return self
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    @property
    def size(self) -> int:
        return self.x0.shape[-1]

    @property
    def prompt_dim(self) -> int | None:
        return None if self.states is None else self.states.shape[-1]

    def batches(
        self, cfg: GeneratorConfig, masks: bool = True
    ) -> Callable[[torch.Generator], Iterator[diffusion.Batch]]:
        """The endless batch stream :func:`diffusion.train_denoiser` reads: ``x0`` and model
        kwargs ``cond`` (unless ``masks`` is False) and ``encoder_hidden_states`` /
        ``encoder_attention_mask`` (prompted models)."""
        bs = min(cfg.batch_size, len(self.x0))

        def stream(gen: torch.Generator) -> Iterator[diffusion.Batch]:
            while True:  # reshuffle every epoch; drop the ragged last batch
                order = torch.randperm(len(self.x0), generator=gen).to(self.x0.device)
                for i in range(0, len(order) - bs + 1, bs):
                    idx = order[i : i + bs]
                    kwargs: dict[str, torch.Tensor] = {}
                    if masks and self.cond is not None:
                        kwargs["cond"] = self.cond[idx]
                    if self.states is not None:
                        kind = torch.randint(0, len(self.kinds), (bs,), generator=gen)
                        p = self.index[kind.to(idx.device), idx]
                        # Prompt dropout: the model also learns the unconditional score that
                        # classifier-free guidance extrapolates from.
                        dropped = torch.rand(bs, generator=gen) < cfg.cond_dropout
                        p[dropped.to(p.device)] = self.empty
                        kwargs["encoder_hidden_states"] = self.states[p]
                        kwargs["encoder_attention_mask"] = self.attn[p]
                    yield self.x0[idx], kwargs

        return stream


class ConditionalGenerator:
    """A conditional diffusion generator; see the module docstring."""

    trains = True
    samples_real = True  # conditioned on the training images' metadata and label maps
    mode = "conditional"
    prompts = False
    masks = False

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def check(self, data: DataConfig, cfg: GeneratorConfig, label: str | None) -> None:
        check_label(self.mode, label, INHERITED)

    # ------------------------------------------------------------------ training
    def _kinds(self, ctx: GenerationContext, cfg: GeneratorConfig) -> list[int]:
        if cfg.text_training == "all_kinds":
            return list(KINDS)
        if ctx.prompt_level is None:
            raise ValueError(f"mode {self.mode!r} needs a prompt kind (P0-P7)")
        return [ctx.prompt_level]

    def training_set(self, ctx: GenerationContext, cfg: GeneratorConfig) -> TrainingSet:
        real = ctx.real_train
        if real.masks is None and (self.masks or cfg.joint_mask):
            raise ValueError(f"mode {self.mode!r} needs labelled training images")
        if self.masks:
            x0 = joint.encode(real.images, None)  # (N, 1, H, W): the image only
            cond = mask_channels(real.masks)  # (N, 4, H, W)
        else:
            x0 = joint.encode(real.images, real.masks if cfg.joint_mask else None)
            cond = None
        if not self.prompts:
            return TrainingSet(x0, cond, [])
        kinds = self._kinds(ctx, cfg)
        table = training_prompts(real, kinds, ctx.data.prompt_variant, cfg.seed)
        # Every distinct prompt encoded once; batches index into the stacked states.
        unique = sorted({p for row in table for p in row} | {""})
        states, attn = load_text_encoder(cfg.text_encoder).encode_tokens(unique)
        position = {p: i for i, p in enumerate(unique)}
        index = torch.tensor([[position[p] for p in row] for row in table])  # (K, N)
        return TrainingSet(x0, cond, kinds, states, attn, index, position[""])

    def fit(
        self, data: TrainingSet, cfg: GeneratorConfig, device: torch.device, progress: bool
    ) -> tuple[DiffusionPipeline, diffusion.TrainResult]:
        """Train the model on ``data``; return its pipeline (on CPU) and the training log."""
        channels = data.x0.shape[1]
        in_channels = channels + (data.cond.shape[1] if data.cond is not None else 0)
        if self.prompts:
            unet = diffusion.build_cond_unet(cfg, data.size, in_channels, channels, data.prompt_dim)
        else:
            unet = diffusion.build_unet(cfg, data.size, in_channels, None, out_channels=channels)
        model = diffusion.ConcatConditioning(unet) if data.cond is not None else unet
        data = data.placed(Acceleration.resolve(cfg, device), device)
        weights = joint.loss_weights(channels, cfg.joint_label_share)
        result = diffusion.train_denoiser(
            model, data.batches(cfg), cfg, device, cfg.seed, progress, channel_weights=weights
        )
        pipe = EchoDiffusionPipeline(
            unet=unet.cpu(),
            scheduler=diffusion.training_scheduler(cfg),
            mode=self.mode,
            prompt_encoder=cfg.text_encoder if self.prompts else None,
            mask_channels=data.cond.shape[1] if data.cond is not None else 0,
            joint_mask=data.cond is None and cfg.joint_mask,
        )
        return pipe, result

    def settings(self, ctx: GenerationContext, cfg: GeneratorConfig, kinds: list[int]) -> dict:
        """What ``echosynth.json`` records beside the pipeline (read back by ``sample``)."""
        return {
            "mode": self.mode,
            "prompt_kinds": kinds,
            "text_training": cfg.text_training if self.prompts else None,
            "prompt_variant": ctx.data.prompt_variant if self.prompts else None,
            "n_train": len(ctx.real_train),
        }

    def train(
        self, ctx: GenerationContext, cfg: GeneratorConfig, out: Path, progress: bool
    ) -> dict:
        data = self.training_set(ctx, cfg)
        pipe, result = self.fit(data, cfg, resolve_device(self.device), progress)
        pipe.save_pretrained(out)
        settings = self.settings(ctx, cfg, data.kinds)
        (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        n = len(ctx.real_train)
        return {
            "losses": result.losses,
            "seconds": result.seconds,
            "ema_decay": result.ema_decay,
            "n_train": n,
        }

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        model_dir: Path | None,
        ctx: GenerationContext,
        cfg: GeneratorConfig,
        n: int,
        seed: int,
        progress: bool,
    ) -> EchoData:
        rng = np.random.default_rng(seed)
        real = ctx.real_train
        if self.masks:
            # SB: perturbed copies of every training map (refuses val/test maps, before any
            # model is loaded), drawn in whole passes so each copy is used equally often.
            pool = perturb_masks(real, copies=cfg.mask_copies, seed=seed)
            source = pool.subset(balanced_picks(n, len(pool), rng))
        else:
            source = real.subset(balanced_picks(n, len(real), rng))
        settings = json.loads((Path(model_dir) / SETTINGS_FILE).read_text())
        pipe = load_pipeline(model_dir)
        pipe.set_progress_bar_config(disable=True)
        device = resolve_device(self.device)
        # The real image each synthetic one was conditioned on (its metadata's source).
        columns: dict[str, object] = {"parent_patient": source.meta["patient"].to_numpy()}
        prompts = None
        if self.prompts:
            level = ctx.prompt_level
            if level is None or level not in settings["prompt_kinds"]:
                raise ValueError(
                    f"this {self.mode} generator was trained on prompt kinds "
                    f"{settings['prompt_kinds']}; cannot sample at kind {level}"
                )
            prompts = prompts_for(source, level, policy=ctx.data.prompt_variant, seed=seed)
            columns["prompt"] = prompts
        images, masks = pipe(
            prompts=prompts,
            masks=source.masks if self.masks else None,
            num_inference_steps=cfg.sample_steps,
            guidance_scale=cfg.guidance_scale if self.prompts else 1.0,
            sampler=cfg.sampler,
            timestep_spacing=cfg.timestep_spacing,
            clip_sample=cfg.clip_sample,
            batch_size=cfg.sample_batch_size,
            seed=seed,
            device=device,
            progress=progress,
            speed=Acceleration.resolve(cfg, device),
            precision=cfg.precision,
        )
        if self.masks:
            label_source = "conditioning"
            columns["copy"] = source.meta["copy"].to_numpy()
        else:
            label_source = "generated" if masks is not None else "none"
        meta = inherited_meta(source.meta, label_source, **columns)
        return EchoData(images=images, masks=masks, meta=meta)
