"""A CRIS-style prompted segmenter on transformers' CLIP encoders (Wang et al., CVPR 2022).

CLIP's vision tower gives patch features and its text tower token features and a sentence
vector. A vision-language decoder (self-attention over pixels, cross-attention to the prompt
tokens) refines the pixel features, which are upsampled x4; the text-to-pixel alignment
projects the sentence vector into a per-prompt 1x1 kernel whose dot product with every pixel
feature is the mask logit. Trained with a sigmoid loss on those logits, this is CRIS's
text-to-pixel contrastive objective: pixels of the named structure are pulled towards the
prompt, the others pushed away.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from benchmark.checkpoints import load_pretrained
from downstream.clipseg import CLIP_MEAN, CLIP_STD, model_folder


class CrisNet(nn.Module):
    """``(B, 1, H, W)`` image and ``(B, 2, L)`` tokens -> ``(B, 1, H, W)`` logits."""

    def __init__(
        self, folder: str | Path, dim: int = 256, layers: int = 3, freeze_backbone: bool = True
    ) -> None:
        super().__init__()
        from transformers import CLIPModel

        self.clip = load_pretrained(CLIPModel, model_folder(str(folder), "clip_path", "CLIP"))
        if freeze_backbone:
            self.clip.requires_grad_(False)
        vision, text = self.clip.config.vision_config, self.clip.config.text_config
        self.size = int(vision.image_size)
        self.grid = self.size // int(vision.patch_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.pixel_in = nn.Linear(vision.hidden_size, dim)
        self.text_in = nn.Linear(text.hidden_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        heads = 8 if dim % 8 == 0 else 1
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.1, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
            nn.GroupNorm(1, dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
        )
        # Sentence vector -> a 1x1 kernel (dim // 4 weights and a bias) per prompt.
        self.kernel = nn.Linear(text.hidden_size, dim // 4 + 1)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pixels = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear")
        pixels = (pixels.repeat(1, 3, 1, 1) - self.mean) / self.std
        patches = self.clip.vision_model(pixel_values=pixels).last_hidden_state[:, 1:]
        ids, mask = text[:, 0], text[:, 1]
        words = self.clip.text_model(input_ids=ids, attention_mask=mask)
        feats = self.decoder(
            self.pixel_in(patches) + self.pos,
            self.text_in(words.last_hidden_state),
            memory_key_padding_mask=mask == 0,
        )
        b, n, d = feats.shape
        feats = feats.transpose(1, 2).reshape(b, d, self.grid, self.grid)
        feats = self.upsample(feats)  # (B, dim // 4, 4 g, 4 g)
        kernel = self.kernel(words.pooler_output)
        logits = torch.einsum("bchw,bc->bhw", feats, kernel[:, :-1]) + kernel[:, -1, None, None]
        return nn.functional.interpolate(logits[:, None], size=(h, w), mode="bilinear")
