"""Text-guided generation (DE's second avenue, without Stable Diffusion's pretrained weights).

A ``UNet2DConditionModel`` trained from scratch reads the prompt (image level, at the cell's
kind P0-P7) through cross-attention on the frozen MiniLM encoder's token states, with
classifier-free guidance (``generator.cond_dropout`` in training, ``generator.guidance_scale``
in sampling). It emits the label map jointly with the image (``label_source="generated"``), so
its images also train segmentation. Sampling draws real training images (seeded, in whole
passes) and prompts with their metadata, which the synthetic image inherits with its
``prompt``. ``generator.text_training``: ``per_kind`` trains one model per prompt kind;
``all_kinds`` one model on every kind's prompts, sampled at each cell's kind.
"""

from __future__ import annotations

from generators.conditional import ConditionalGenerator


class TextGenerator(ConditionalGenerator):
    mode = "text"
    prompts = True
    masks = False
