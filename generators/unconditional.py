"""Unconditional DDPM (DE's first avenue), optionally class-conditioned on view x phase, or
one model per view x phase class as DE trained them (``generator.per_class_models``).

The model is a diffusers ``UNet2DModel`` saved as a ``DDPMPipeline``, so
``diffusers.DiffusionPipeline.from_pretrained(folder)`` reloads it (per class: each
``class-<view>-<phase>/`` subfolder). With
``generator.joint_mask`` it denoises the image and its one-hot label map together
(see :mod:`generators.joint`), so its samples come with labels for segmentation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from benchmark.checkpoints import load_pretrained, load_settings
from benchmark.config import GeneratorConfig
from benchmark.data.config import DataConfig
from benchmark.data.records import EchoData
from benchmark.runtime import child_seed, resolve_device
from generators import diffusion, joint
from generators.acceleration import Acceleration
from generators.base import GenerationContext, check_label, synthetic_meta

# DE trained one model per view x phase class (generator.per_class_models); class
# conditioning gives the same control with one model. The class index is
# CLASSES.index((view, phase)).
CLASSES = [("2CH", "ED"), ("2CH", "ES"), ("4CH", "ED"), ("4CH", "ES")]
SETTINGS_FILE = "echosynth.json"


def class_labels(data: EchoData) -> np.ndarray:
    """``(N,)`` int64 class index of each image from its view and phase."""
    pairs = list(zip(data.meta["view"], data.meta["phase"]))
    unknown = sorted({p for p in pairs if p not in CLASSES}, key=str)
    if unknown:
        raise ValueError(f"class-conditional generation needs view/phase in {CLASSES}: {unknown}")
    return np.array([CLASSES.index(p) for p in pairs], dtype=np.int64)


class UnconditionalGenerator:
    trains = True
    samples_real = False

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def check(self, data: DataConfig, cfg: GeneratorConfig, label: str | None) -> None:
        # The class is its only label: view and phase, when class-conditional or per class.
        by_class = cfg.class_conditional or cfg.per_class_models
        carried = ("view", "phase") if by_class else ()
        hint = "" if by_class else "; set generator.class_conditional true"
        check_label("unconditional", label, carried, hint)

    def train(
        self, ctx: GenerationContext, cfg: GeneratorConfig, out: Path, progress: bool
    ) -> dict:
        real = ctx.real_train
        if cfg.joint_mask and real.masks is None:
            raise ValueError("generator.joint_mask needs labelled training images")
        x0 = joint.encode(real.images, real.masks if cfg.joint_mask else None)
        by_class = cfg.class_conditional or cfg.per_class_models
        label_ids = class_labels(real) if by_class else None  # (N,) host ints
        device = resolve_device(self.device)
        settings = {
            "mode": "unconditional",
            "joint_mask": cfg.joint_mask,
            "class_conditional": cfg.class_conditional,
            "per_class_models": cfg.per_class_models,
            "classes": CLASSES if by_class else None,
            # From the host copy: labels placed on the GPU (generator.preload) are not read.
            "class_frequencies": (
                np.bincount(label_ids, minlength=len(CLASSES)).tolist()
                if label_ids is not None
                else None
            ),
        }
        if cfg.per_class_models:
            # DE's setup: a model per class, each on its class's images only. A class the
            # training data lacks gets no model; it is never sampled (frequency 0).
            results, folders = [], {}
            for c in range(len(CLASSES)):
                members = np.flatnonzero(label_ids == c)
                if len(members):
                    seed = child_seed(cfg.seed, diffusion.CLASS_STREAM, c)
                    unet, result = _train_one(x0[members], None, cfg, device, seed, progress)
                    folders[c] = class_folder(c)
                    _save(unet, cfg, out / folders[c])
                    results.append(result)
            settings["class_folders"] = {str(c): f for c, f in folders.items()}
            losses = [v for r in results for v in r.losses]  # class by class, in CLASSES order
            seconds = sum(r.seconds for r in results)
            ema_decay = min(r.ema_decay for r in results)
        else:
            labels = None if label_ids is None else torch.from_numpy(label_ids)
            unet, result = _train_one(x0, labels, cfg, device, cfg.seed, progress)
            _save(unet, cfg, out)
            losses, seconds, ema_decay = result.losses, result.seconds, result.ema_decay
        (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        return {"losses": losses, "seconds": seconds, "ema_decay": ema_decay, "n_train": len(real)}

    def sample(
        self,
        model_dir: Path | None,
        ctx: GenerationContext,
        cfg: GeneratorConfig,
        n: int,
        seed: int,
        progress: bool,
    ) -> EchoData:
        model_dir = Path(model_dir)
        settings = json.loads((model_dir / SETTINGS_FILE).read_text())
        device = resolve_device(self.device)
        columns: dict[str, object] = {}
        labels = None
        if settings["class_conditional"] or settings.get("per_class_models"):
            # Classes in the proportions of the training data, in a seeded order.
            freq = np.asarray(settings["class_frequencies"], dtype=float)
            labels = np.random.default_rng(seed).choice(len(CLASSES), size=n, p=freq / freq.sum())
            columns = {
                "view": [CLASSES[c][0] for c in labels],
                "phase": [CLASSES[c][1] for c in labels],
            }
        if settings.get("per_class_models"):
            parts = {}
            for c in np.unique(labels):
                members = np.flatnonzero(labels == c)
                folder = model_dir / settings["class_folders"][str(c)]
                # Each class its own initial noise: one seed for all would start image k of
                # every class from the same noise.
                class_seed = child_seed(seed, diffusion.CLASS_STREAM, int(c))
                parts[int(c)] = (
                    members,
                    _draw(folder, cfg, len(members), class_seed, None, device, progress),
                )
            first = next(iter(parts.values()))[1]
            x = torch.empty((n, *first.shape[1:]), dtype=first.dtype)
            for members, drawn in parts.values():
                x[torch.from_numpy(members)] = drawn
        else:
            kwargs_for = None
            if settings["class_conditional"]:
                lab = torch.from_numpy(labels)

                def kwargs_for(sl: slice) -> dict[str, torch.Tensor]:
                    return {"class_labels": lab[sl]}

            x = _draw(model_dir, cfg, n, seed, kwargs_for, device, progress)
        images, masks = joint.decode(x)
        meta = synthetic_meta(n, "generated" if masks is not None else "none", **columns)
        return EchoData(images=images, masks=masks, meta=meta)


def class_folder(c: int) -> str:
    """The subfolder of class ``c``'s model in a per-class generator: ``class-2CH-ED``."""
    return "class-" + "-".join(CLASSES[c])


def _train_one(
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: GeneratorConfig,
    device: torch.device,
    seed: int,
    progress: bool,
) -> tuple[UNet2DModel, diffusion.TrainResult]:
    """One UNet trained on ``x0`` ``(N, C, H, W)`` (class-conditioned on ``labels`` ``(N,)``
    when given)."""
    unet = diffusion.build_unet(
        cfg,
        size=x0.shape[-1],
        channels=x0.shape[1],
        num_classes=len(CLASSES) if labels is not None else None,
    )
    bs = min(cfg.batch_size, len(x0))
    speed = Acceleration.resolve(cfg, device)
    x0 = speed.place(x0, device)
    labels = None if labels is None else speed.place(labels, device)

    def batches(gen: torch.Generator) -> Iterator[diffusion.Batch]:
        while True:  # reshuffle every epoch; drop the ragged last batch
            order = torch.randperm(len(x0), generator=gen).to(x0.device)
            for i in range(0, len(order) - bs + 1, bs):
                idx = order[i : i + bs]
                kwargs = {"class_labels": labels[idx]} if labels is not None else {}
                yield x0[idx], kwargs

    weights = joint.loss_weights(x0.shape[1], cfg.joint_label_share)
    result = diffusion.train_denoiser(
        unet, batches, cfg, device, seed, progress, speed, channel_weights=weights
    )
    return unet, result


def _save(unet: UNet2DModel, cfg: GeneratorConfig, folder: Path) -> None:
    """A ``DDPMPipeline``: ``diffusers.DiffusionPipeline.from_pretrained(folder)`` reloads it."""
    DDPMPipeline(unet=unet.cpu(), scheduler=diffusion.training_scheduler(cfg)).save_pretrained(
        folder
    )


def _draw(
    folder: Path,
    cfg: GeneratorConfig,
    n: int,
    seed: int,
    kwargs_for,
    device: torch.device,
    progress: bool,
) -> torch.Tensor:
    """``n`` samples ``(n, C, H, W)`` of the DDPMPipeline in ``folder``."""
    # The pipeline's parts, loaded as DiffusionPipeline.from_pretrained(folder) would.
    # Checked loads: safetensors only, every weight present (benchmark.checkpoints).
    unet = load_pretrained(UNet2DModel, folder, subfolder="unet")
    scheduler = load_settings(DDPMScheduler, folder, subfolder="scheduler")
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    return diffusion.sample(
        unet,
        diffusion.sampling_scheduler(scheduler, cfg.sampler, cfg.timestep_spacing, cfg.clip_sample),
        n,
        shape,
        cfg.sample_steps,
        cfg.sample_batch_size,
        seed,
        device,
        kwargs_for,
        progress,
        speed=Acceleration.resolve(cfg, device),
        precision=cfg.precision,
    )
