"""Mask-guided generation (SB's semantic avenue, SDM-like): the label map conditions the image.

A ``UNet2DModel`` sees the noisy image with the one-hot label map concatenated as extra input
channels (1 + 4 in, 1 out). Sampling is conditioned on ``generator.mask_copies`` perturbed
copies of each real training label map (SB's affine + elastic recipe,
:func:`benchmark.data.conditioning.perturb_masks`, which refuses validation and test maps);
the conditioning map is the synthetic image's label (``label_source="conditioning"``) and the
metadata is inherited from the source map's image.
"""

from __future__ import annotations

from generators.conditional import ConditionalGenerator


class SemanticGenerator(ConditionalGenerator):
    mode = "semantic"
    prompts = False
    masks = True
