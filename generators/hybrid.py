"""Text + label-map generation (DE's third avenue), in two variants
(``generator.hybrid_variant``):

- ``concat``: the semantic mode's input (noisy image + one-hot conditioning map, 1 + 4
  channels, 1 out) fed to the text mode's ``UNet2DConditionModel``, which also cross-attends
  to the prompt of the conditioning map's source image; one model, one training run.
- ``controlnet``: DE's architecture without Stable Diffusion's weights: a text UNet trained on
  image + prompt, then a diffusers ``ControlNetModel`` trained on the label map beside it with
  the UNet frozen (:mod:`generators.controlnet`).

In both, classifier-free guidance drops the prompt only: the label map is kept in both
branches, so the guidance strengthens the text. The conditioning map is the image's label
(``label_source="conditioning"``); sampling maps are perturbed copies of training maps.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from benchmark.config import GeneratorConfig
from generators import diffusion
from generators.base import GenerationContext
from generators.conditional import ConditionalGenerator, TrainingSet
from generators.controlnet import fit_controlnet


class HybridGenerator(ConditionalGenerator):
    mode = "hybrid"
    prompts = True
    masks = True

    def fit(
        self, data: TrainingSet, cfg: GeneratorConfig, device: torch.device, progress: bool
    ) -> tuple[DiffusionPipeline, diffusion.TrainResult]:
        if cfg.hybrid_variant == "controlnet":
            return fit_controlnet(data, cfg, device, progress, self.mode)
        return super().fit(data, cfg, device, progress)

    def settings(self, ctx: GenerationContext, cfg: GeneratorConfig, kinds: list[int]) -> dict:
        return super().settings(ctx, cfg, kinds) | {"hybrid_variant": cfg.hybrid_variant}
