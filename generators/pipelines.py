"""The saved form of the conditional generators (text, semantic, hybrid) and its loader.

A trained model is a diffusers pipeline folder (``model_index.json``, ``unet/``,
``scheduler/``; the ControlNet hybrid also ``controlnet/``) whose class is
:class:`EchoDiffusionPipeline` or its subclass
:class:`generators.controlnet.EchoControlNetPipeline`; reload either with
``EchoDiffusionPipeline.from_pretrained(folder)`` (or :func:`load_pipeline`), which returns
the class named in the folder's ``model_index.json``. Plain
``diffusers.DiffusionPipeline.from_pretrained`` cannot, because the class lives in this
project, not in diffusers. The prompt encoder is not copied into the folder: it is the frozen
packaged MiniLM (or a local folder), named in the pipeline's config as ``prompt_encoder``.

Pipeline config (``model_index.json``):

- ``mode``: ``text`` | ``semantic`` | ``hybrid``;
- ``prompt_encoder``: encoder source for cross-attention, ``None`` when prompts are not read;
- ``mask_channels``: one-hot label-map channels concatenated to the noisy input (0 or 4);
- ``joint_mask``: the output carries the label map as extra channels (text mode).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, SchedulerMixin

from benchmark.text_encoder import load_text_encoder
from generators import diffusion, joint
from generators.acceleration import Acceleration

# Pipeline classes of this project by the name save_pretrained writes into model_index.json,
# and the module defining each (imported on first load: that module imports this one).
_PIPELINES = {
    "EchoDiffusionPipeline": "generators.pipelines",
    "EchoControlNetPipeline": "generators.controlnet",
}


class EchoDiffusionPipeline(DiffusionPipeline):
    """A UNet and its training noise schedule, plus what conditions it (see module doc)."""

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: SchedulerMixin,
        mode: str = "text",
        prompt_encoder: str | None = None,
        mask_channels: int = 0,
        joint_mask: bool = False,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            mode=mode,
            prompt_encoder=prompt_encoder,
            mask_channels=mask_channels,
            joint_mask=joint_mask,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved pipeline as the project class named in its ``model_index.json``
        (e.g. :class:`generators.controlnet.EchoControlNetPipeline`), so one loader serves
        every conditional generator."""
        index = Path(pretrained_model_name_or_path) / "model_index.json"
        if index.is_file():
            name = json.loads(index.read_text()).get("_class_name")
            target = _PIPELINES.get(name)
            if target is not None:
                klass = getattr(importlib.import_module(target), name)
                if klass is not cls and issubclass(klass, cls):
                    return klass.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def denoiser(self) -> torch.nn.Module:
        """The module sampling calls as ``(sample, t, **kwargs).sample``, kwargs as built in
        ``__call__`` (``cond``, ``encoder_hidden_states``, ``encoder_attention_mask``)."""
        return diffusion.ConcatConditioning(self.unet) if self.config.mask_channels else self.unet

    def _prompt_kwargs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        states, mask = load_text_encoder(self.config.prompt_encoder).encode_tokens(prompts)
        return {"encoder_hidden_states": states, "encoder_attention_mask": mask}

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str] | None = None,
        masks: np.ndarray | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        sampler: str = "ddim",
        timestep_spacing: str | None = None,
        clip_sample: bool | None = None,
        batch_size: int = 64,
        seed: int = 0,
        device: torch.device | str = "cpu",
        progress: bool = False,
        speed: Acceleration | None = None,
        precision: str = "bf16",
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One image per prompt and/or conditioning label map.

        Args:
            prompts: ``N`` prompts (text, hybrid).
            masks: ``(N, H, W)`` conditioning label maps in {0..3} (semantic, hybrid).
            guidance_scale: classifier-free guidance weight; the unconditional branch is the
                empty prompt (the label map, if any, is kept).
            timestep_spacing: the sampler's step spacing, leading or trailing (None: the
                saved scheduler's).
            clip_sample: clip the clean-image estimate of every DDPM / DDIM step to
                [-1, 1] (None: the saved scheduler's).
            speed: CUDA speed options of the denoiser (``generators.acceleration``).
            precision: the denoiser's autocast on CUDA: bf16, fp16 or fp32.

        Returns:
            images ``(N, H, W)`` float32 in [0, 1] and label maps ``(N, H, W)`` uint8: the
            generated ones (joint output), the conditioning ones, or ``None``.
        """
        cfg = self.config
        if cfg.prompt_encoder is not None and prompts is None:
            raise ValueError(f"mode {cfg.mode!r} needs prompts")
        if cfg.mask_channels and masks is None:
            raise ValueError(f"mode {cfg.mode!r} needs conditioning label maps")
        n = len(prompts) if prompts is not None else len(masks)
        if masks is not None and len(masks) != n:
            raise ValueError(f"{len(masks)} label maps for {n} prompts")

        def kwargs_for(sl: slice, empty: bool = False) -> dict[str, torch.Tensor]:
            kwargs = {}
            if cfg.prompt_encoder is not None:
                batch = [""] * (sl.stop - sl.start) if empty else prompts[sl]
                kwargs = self._prompt_kwargs(batch)
            if cfg.mask_channels:
                kwargs["cond"] = mask_channels(masks[sl])
            return kwargs

        unet = self.denoiser()
        out_channels = self.unet.config.out_channels
        size = self.unet.config.sample_size
        x = diffusion.sample(
            unet,
            diffusion.sampling_scheduler(self.scheduler, sampler, timestep_spacing, clip_sample),
            n,
            (out_channels, size, size),
            num_inference_steps,
            batch_size,
            seed,
            torch.device(device),
            kwargs_for,
            progress,
            uncond_kwargs_for=(
                (lambda sl: kwargs_for(sl, empty=True)) if cfg.prompt_encoder else None
            ),
            guidance_scale=guidance_scale,
            speed=speed,
            precision=precision,
        )
        images, generated = joint.decode(x)
        if cfg.mask_channels:
            return images, np.asarray(masks, dtype=np.uint8)
        return images, generated


def mask_channels(masks: np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` label maps -> ``(N, 4, H, W)`` one-hot in [-1, 1] (the joint encoding's
    label channels), the extra input channels of mask-guided models."""
    return joint.encode(np.zeros(masks.shape, np.float32), masks)[:, 1:]


def load_pipeline(folder: Path | str) -> EchoDiffusionPipeline:
    """Reload a conditional generator saved by :meth:`EchoDiffusionPipeline.save_pretrained`.

    Its networks come from safetensors only and must fit their configs; a damaged or
    foreign folder is a :class:`benchmark.checkpoints.CheckpointError` naming it."""
    from benchmark.checkpoints import load_diffusers_pipeline

    return load_diffusers_pipeline(EchoDiffusionPipeline, Path(folder))
