"""The ControlNet variant of the hybrid mode (``generator.hybrid_variant: controlnet``).

DE's text + label map generator was a ControlNet on Stable Diffusion: a pretrained
text-to-image model, frozen, plus a trainable copy of its encoder that reads the label map and
adds its features to the frozen UNet's skip connections through zero-initialised
convolutions. No pretrained diffusion weights exist offline, so the recipe is reproduced in
two phases on the real training split, both from the project's own models:

1. the base: the text mode's ``UNet2DConditionModel`` (``diffusion.build_cond_unet``;
   image only, 1 channel in and out) trained on image + prompt for ``generator.train_steps``,
   with prompt dropout for classifier-free guidance;
2. the control: ``diffusers.ControlNetModel.from_unet(base)`` (the encoder copied from the
   trained base, 4 conditioning channels: the one-hot label map) trained for another
   ``generator.train_steps`` with the base frozen, on (image, prompt, label map) triples with
   the same prompt dropout.

Why two phases rather than training both from scratch together: a ControlNet's zero
convolutions and frozen base exist to add spatial control to a text-to-image model that is
already good without degrading it; trained jointly from scratch it is only a larger UNet with a
side input, and comparing it with the concat variant would compare parameter counts, not the
recipe DE used. The price is two training runs (about twice the concat variant's time; see
``docs/GENERATORS.md`` for the measured comparison).

The diffusers ``ControlNetModel`` works in Stable Diffusion's latent space, where its
conditioning embedding downsamples the pixel-space map by 8 to the latent resolution. Here the
UNet denoises pixels, so the embedding keeps full resolution
(``conditioning_embedding_out_channels`` of one entry: a 3x3 conv, SiLU and the zero conv),
which works at any size, 32 x 32 included.

Sampling: classifier-free guidance on the prompt only; the label map drives the ControlNet
in both branches (as in the concat variant). The ControlNet's cross-attention takes no
attention mask in diffusers, so its prompt states are zero-padded to the training prompt
length (``prompt_length``, saved in the pipeline config): a prompt then looks the same to it in
training and in sampling, whatever else is in the batch (Stable Diffusion pads to 77 tokens
for the same reason). The frozen base keeps its attention mask.

Saved with ``save_pretrained`` as ``unet/``, ``controlnet/``, ``scheduler/`` and
``model_index.json`` (class :class:`EchoControlNetPipeline`), reloaded with
:func:`generators.pipelines.load_pipeline`.
"""

from __future__ import annotations

import torch
from diffusers import ControlNetModel, SchedulerMixin, UNet2DConditionModel

from benchmark.config import GeneratorConfig
from benchmark.runtime import child_seed
from generators import diffusion
from generators.acceleration import Acceleration
from generators.conditional import TrainingSet
from generators.pipelines import EchoDiffusionPipeline


class ControlledUNet(torch.nn.Module):
    """A UNet steered by a ControlNet: ``forward(sample (B, C, H, W), t, cond (B, K, H, W),
    encoder_hidden_states (B, L, D), encoder_attention_mask (B, L))`` returns the UNet's
    output (``.sample`` ``(B, C_out, H, W)``) with the ControlNet's residuals added to its
    skip connections and mid block. ``prompt_length``: the ControlNet's prompt states are
    zero-padded to at least this many tokens (see the module docstring)."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        prompt_length: int = 0,
        conditioning_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet
        self.prompt_length = prompt_length
        self.conditioning_scale = conditioning_scale

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        cond: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ):
        missing = self.prompt_length - encoder_hidden_states.shape[1]
        control_states = (
            torch.nn.functional.pad(encoder_hidden_states, (0, 0, 0, missing))
            if missing > 0
            else encoder_hidden_states
        )
        down, mid = self.controlnet(
            sample,
            timestep,
            encoder_hidden_states=control_states,
            controlnet_cond=cond.to(sample.dtype),
            conditioning_scale=self.conditioning_scale,
            return_dict=False,
        )
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        )


def build_controlnet(
    unet: UNet2DConditionModel, cfg: GeneratorConfig, conditioning_channels: int
) -> ControlNetModel:
    """``ControlNetModel.from_unet``: the trained base's encoder copied, zero convolutions to
    its skip connections, and a full-resolution conditioning embedding (one conv of the
    base's first width) for ``(B, conditioning_channels, H, W)`` label maps."""
    return ControlNetModel.from_unet(
        unet,
        conditioning_embedding_out_channels=(cfg.block_out_channels[0],),
        conditioning_channels=conditioning_channels,
    )


def fit_controlnet(
    data: TrainingSet,
    cfg: GeneratorConfig,
    device: torch.device,
    progress: bool,
    mode: str = "hybrid",
) -> tuple[EchoDiffusionPipeline, diffusion.TrainResult]:
    """Both phases of the module docstring on ``data`` (image-only ``x0`` ``(N, 1, H, W)``,
    maps ``cond`` ``(N, 4, H, W)``, prompt tables); returns the pipeline on CPU and the
    training log (base steps, then control steps)."""
    if data.cond is None or data.states is None:
        raise ValueError("the ControlNet hybrid needs label maps and prompts")
    channels = data.x0.shape[1]
    unet = diffusion.build_cond_unet(cfg, data.size, channels, channels, data.prompt_dim)
    data = data.placed(Acceleration.resolve(cfg, device), device)
    base = diffusion.train_denoiser(
        unet, data.batches(cfg, masks=False), cfg, device, cfg.seed, progress
    )
    controlnet = build_controlnet(unet, cfg, data.cond.shape[1])
    unet.requires_grad_(False)  # the base stays as trained; only the control branch learns
    prompt_length = int(data.states.shape[1])
    model = ControlledUNet(unet, controlnet, prompt_length)
    # A stream of its own: with the base's seed both phases would draw the same noise and
    # timesteps, with ``seed + 1`` the base phase of the generator seeded ``seed + 1``
    # (under several processes the other ranks' seeds derive from it: `rank_seed`).
    phase_seed = child_seed(cfg.seed, *diffusion.CONTROLNET_STREAM)
    control = diffusion.train_denoiser(model, data.batches(cfg), cfg, device, phase_seed, progress)
    pipe = EchoControlNetPipeline(
        unet=unet.cpu(),
        controlnet=controlnet.cpu(),
        scheduler=diffusion.training_scheduler(cfg),
        mode=mode,
        prompt_encoder=cfg.text_encoder,
        mask_channels=data.cond.shape[1],
        prompt_length=prompt_length,
    )
    log = diffusion.TrainResult(
        base.losses + control.losses, base.seconds + control.seconds, control.ema_decay
    )
    return pipe, log


class EchoControlNetPipeline(EchoDiffusionPipeline):
    """An :class:`EchoDiffusionPipeline` whose label maps enter through a ControlNet beside
    the text UNet instead of as input channels; same call signature and outputs (images
    ``(N, H, W)`` in [0, 1], the conditioning maps as labels). Extra config:
    ``prompt_length``, the ControlNet's padded prompt length."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        scheduler: SchedulerMixin,
        mode: str = "hybrid",
        prompt_encoder: str | None = None,
        mask_channels: int = 4,
        joint_mask: bool = False,
        prompt_length: int = 0,
    ) -> None:
        super().__init__(unet, scheduler, mode, prompt_encoder, mask_channels, joint_mask)
        self.register_modules(controlnet=controlnet)
        self.register_to_config(prompt_length=prompt_length)

    def denoiser(self) -> torch.nn.Module:
        return ControlledUNet(self.unet, self.controlnet, self.config.prompt_length)
