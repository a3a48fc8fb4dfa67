"""CLIPSeg (transformers' ``CLIPSegForImageSegmentation``) as a prompted segmenter.

Loaded from a local folder written by ``save_pretrained`` (the pretrained CIDAS/clipseg
weights when the user has them, or a model built from a config). The echo image is resized
to the model's input size (SB used 352), repeated to three channels and normalised with the
CLIP statistics; logits are resized back. By default the CLIP backbone is frozen and only
the decoder trains, as in CLIPSeg's own training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from benchmark.checkpoints import load_pretrained

# CLIP's image normalisation, used when the folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def model_folder(path: str | None, option: str, what: str) -> Path:
    """The local folder of a saved transformers model, or an error naming the option."""
    if not path:
        raise ValueError(f"downstream.vlseg.{option} is required for this vlseg model")
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a {what} model folder (no config.json)")
    return folder


class ClipSegNet(nn.Module):
    """``(B, 1, H, W)`` image and ``(B, 2, L)`` tokens -> ``(B, 1, H, W)`` logits."""

    def __init__(self, folder: str | Path, freeze_backbone: bool = True) -> None:
        super().__init__()
        from transformers import CLIPSegForImageSegmentation

        folder = model_folder(str(folder), "clipseg_path", "CLIPSeg")
        self.model = load_pretrained(CLIPSegForImageSegmentation, folder)
        self.size = int(self.model.config.vision_config.image_size)
        mean, std = CLIP_MEAN, CLIP_STD
        processor = folder / "preprocessor_config.json"
        if processor.is_file():
            conf = json.loads(processor.read_text())
            mean, std = conf.get("image_mean", mean), conf.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if freeze_backbone:
            self.model.clip.requires_grad_(False)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pixels = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear")
        pixels = (pixels.repeat(1, 3, 1, 1) - self.mean) / self.std
        logits = self.model(
            input_ids=text[:, 0], attention_mask=text[:, 1], pixel_values=pixels
        ).logits
        logits = logits.reshape(x.shape[0], 1, self.size, self.size)  # B=1 comes back squeezed
        return nn.functional.interpolate(logits, size=(h, w), mode="bilinear")
