"""Text + label-map generation (DE's third avenue, in its simple form).

The semantic mode's input (noisy image + one-hot conditioning map, 1 + 4 channels, 1 out) fed
to the text mode's ``UNet2DConditionModel``, which also cross-attends to the prompt of the
conditioning map's source image. Classifier-free guidance drops the prompt only: the label map
is kept in both branches, so the guidance strengthens the text, as with a ControlNet on Stable
Diffusion. DE's ControlNet variant (a frozen pretrained text-to-image model plus a trained
control branch) needs pretrained weights and is not built here.
"""

from __future__ import annotations

from generators.conditional import ConditionalGenerator


class HybridGenerator(ConditionalGenerator):
    mode = "hybrid"
    prompts = True
    masks = True
