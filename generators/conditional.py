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
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmark.config import GeneratorConfig
from benchmark.data.conditioning import perturb_masks
from benchmark.data.records import EchoData
from benchmark.prompts import KINDS, prompts_for
from benchmark.runtime import resolve_device
from benchmark.text_encoder import load_text_encoder
from generators import diffusion, joint
from generators.base import GenerationContext, synthetic_meta
from generators.pipelines import EchoDiffusionPipeline, load_pipeline, mask_channels

SETTINGS_FILE = "echosynth.json"
# Attributes a synthetic image takes over from the real image that conditioned it.
INHERITED = ("view", "phase", "sex", "age", "quality", "ef")


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


class ConditionalGenerator:
    """A conditional diffusion generator; see the module docstring."""

    trains = True
    mode = "conditional"
    prompts = False
    masks = False

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    # ------------------------------------------------------------------ training
    def _kinds(self, ctx: GenerationContext, cfg: GeneratorConfig) -> list[int]:
        if cfg.text_training == "all_kinds":
            return list(KINDS)
        if ctx.prompt_level is None:
            raise ValueError(f"mode {self.mode!r} needs a prompt kind (P0-P7)")
        return [ctx.prompt_level]

    def train(
        self, ctx: GenerationContext, cfg: GeneratorConfig, out: Path, progress: bool
    ) -> dict:
        real = ctx.real_train
        if real.masks is None and (self.masks or cfg.joint_mask):
            raise ValueError(f"mode {self.mode!r} needs labelled training images")
        size = real.images.shape[-1]
        if self.masks:
            x0 = joint.encode(real.images, None)  # (N, 1, H, W): the image only
            cond = mask_channels(real.masks)  # (N, 4, H, W)
            in_channels, out_channels = 1 + cond.shape[1], 1
        else:
            x0 = joint.encode(real.images, real.masks if cfg.joint_mask else None)
            cond = None
            in_channels = out_channels = x0.shape[1]

        kinds: list[int] = []
        if self.prompts:
            kinds = self._kinds(ctx, cfg)
            table = training_prompts(real, kinds, ctx.data.prompt_variant, cfg.seed)
            # Every distinct prompt encoded once; batches index into the stacked states.
            unique = sorted({p for row in table for p in row} | {""})
            encoder = load_text_encoder(cfg.text_encoder)
            states, attn = encoder.encode_tokens(unique)  # (P, L, dim), (P, L)
            position = {p: i for i, p in enumerate(unique)}
            index = torch.tensor([[position[p] for p in row] for row in table])  # (K, N)
            empty = position[""]
            unet = diffusion.build_cond_unet(cfg, size, in_channels, out_channels, encoder.dim)
        else:
            unet = diffusion.build_unet(cfg, size, in_channels, None, out_channels=out_channels)
        model = diffusion.ConcatConditioning(unet) if self.masks else unet

        bs = min(cfg.batch_size, len(x0))

        def batches(gen: torch.Generator) -> Iterator[diffusion.Batch]:
            while True:  # reshuffle every epoch; drop the ragged last batch
                order = torch.randperm(len(x0), generator=gen)
                for i in range(0, len(order) - bs + 1, bs):
                    idx = order[i : i + bs]
                    kwargs: dict[str, torch.Tensor] = {}
                    if cond is not None:
                        kwargs["cond"] = cond[idx]
                    if self.prompts:
                        kind = torch.randint(0, len(kinds), (bs,), generator=gen)
                        p = index[kind, idx]
                        # Prompt dropout: the model also learns the unconditional score that
                        # classifier-free guidance extrapolates from.
                        p[torch.rand(bs, generator=gen) < cfg.cond_dropout] = empty
                        kwargs["encoder_hidden_states"] = states[p]
                        kwargs["encoder_attention_mask"] = attn[p]
                    yield x0[idx], kwargs

        device = resolve_device(self.device)
        result = diffusion.train_denoiser(model, batches, cfg, device, cfg.seed, progress)
        EchoDiffusionPipeline(
            unet=unet.cpu(),
            scheduler=diffusion.training_scheduler(cfg),
            mode=self.mode,
            prompt_encoder=cfg.text_encoder if self.prompts else None,
            mask_channels=cond.shape[1] if cond is not None else 0,
            joint_mask=cond is None and cfg.joint_mask,
        ).save_pretrained(out)
        settings = {
            "mode": self.mode,
            "prompt_kinds": kinds,
            "text_training": cfg.text_training if self.prompts else None,
            "prompt_variant": ctx.data.prompt_variant if self.prompts else None,
            "n_train": len(real),
        }
        (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        return {"losses": result.losses, "seconds": result.seconds, "n_train": len(real)}

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
            batch_size=cfg.sample_batch_size,
            seed=seed,
            device=resolve_device(self.device),
            progress=progress,
        )
        if self.masks:
            label_source = "conditioning"
            columns["copy"] = source.meta["copy"].to_numpy()
        else:
            label_source = "generated" if masks is not None else "none"
        meta = inherited_meta(source.meta, label_source, **columns)
        return EchoData(images=images, masks=masks, meta=meta)
