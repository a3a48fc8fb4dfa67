"""Unconditional DDPM (DE's first avenue), optionally class-conditioned on view x phase.

The model is a diffusers ``UNet2DModel`` saved as a ``DDPMPipeline``, so
``diffusers.DiffusionPipeline.from_pretrained(folder)`` reloads it. With
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
from benchmark.runtime import resolve_device
from generators import diffusion, joint
from generators.acceleration import Acceleration
from generators.base import GenerationContext, check_label, synthetic_meta

# DE trained one model per view x phase class; class conditioning gives the same control
# with one model. The class index is CLASSES.index((view, phase)).
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
        # The class index is its only label: view and phase, when class-conditional.
        carried = ("view", "phase") if cfg.class_conditional else ()
        hint = "" if cfg.class_conditional else "; set generator.class_conditional true"
        check_label("unconditional", label, carried, hint)

    def train(
        self, ctx: GenerationContext, cfg: GeneratorConfig, out: Path, progress: bool
    ) -> dict:
        real = ctx.real_train
        if cfg.joint_mask and real.masks is None:
            raise ValueError("generator.joint_mask needs labelled training images")
        x0 = joint.encode(real.images, real.masks if cfg.joint_mask else None)
        label_ids = class_labels(real) if cfg.class_conditional else None  # (N,) host ints
        labels = None if label_ids is None else torch.from_numpy(label_ids)
        unet = diffusion.build_unet(
            cfg,
            size=x0.shape[-1],
            channels=x0.shape[1],
            num_classes=len(CLASSES) if cfg.class_conditional else None,
        )

        bs = min(cfg.batch_size, len(x0))
        device = resolve_device(self.device)
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
            unet, batches, cfg, device, cfg.seed, progress, speed, channel_weights=weights
        )
        DDPMPipeline(unet=unet.cpu(), scheduler=diffusion.training_scheduler(cfg)).save_pretrained(
            out
        )
        settings = {
            "mode": "unconditional",
            "joint_mask": cfg.joint_mask,
            "class_conditional": cfg.class_conditional,
            "classes": CLASSES if cfg.class_conditional else None,
            # From the host copy: ``labels`` may live on the GPU by now (generator.preload).
            "class_frequencies": (
                np.bincount(label_ids, minlength=len(CLASSES)).tolist()
                if label_ids is not None
                else None
            ),
        }
        (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        return {
            "losses": result.losses,
            "seconds": result.seconds,
            "ema_decay": result.ema_decay,
            "n_train": len(real),
        }

    def sample(
        self,
        model_dir: Path | None,
        ctx: GenerationContext,
        cfg: GeneratorConfig,
        n: int,
        seed: int,
        progress: bool,
    ) -> EchoData:
        settings = json.loads((Path(model_dir) / SETTINGS_FILE).read_text())
        # The pipeline's parts, loaded as DiffusionPipeline.from_pretrained(model_dir) would.
        # Checked loads: safetensors only, every weight present (benchmark.checkpoints).
        unet = load_pretrained(UNet2DModel, model_dir, subfolder="unet")
        scheduler = load_settings(DDPMScheduler, model_dir, subfolder="scheduler")
        shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        columns: dict[str, object] = {}
        kwargs_for = None
        if settings["class_conditional"]:
            # Classes in the proportions of the training data, in a seeded order.
            freq = np.asarray(settings["class_frequencies"], dtype=float)
            rng = np.random.default_rng(seed)
            labels = rng.choice(len(CLASSES), size=n, p=freq / freq.sum())
            columns = {
                "view": [CLASSES[c][0] for c in labels],
                "phase": [CLASSES[c][1] for c in labels],
            }
            lab = torch.from_numpy(labels)

            def kwargs_for(sl: slice) -> dict[str, torch.Tensor]:
                return {"class_labels": lab[sl]}

        device = resolve_device(self.device)
        x = diffusion.sample(
            unet,
            diffusion.sampling_scheduler(
                scheduler, cfg.sampler, cfg.timestep_spacing, cfg.clip_sample
            ),
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
        images, masks = joint.decode(x)
        meta = synthetic_meta(n, "generated" if masks is not None else "none", **columns)
        return EchoData(images=images, masks=masks, meta=meta)
