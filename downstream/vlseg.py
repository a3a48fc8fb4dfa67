"""Prompted vision-language segmentation (SB's task): one binary mask per (image, structure).

The offline default, in the spirit of CLIPSeg: frozen MiniLM embeddings of the prompt
condition a convolutional encoder-decoder through FiLM (a per-channel scale and shift at every
resolution). The prompt of an (image, structure) pair is SB's template at the cell's prompt
kind; with P0 the prompt is empty, no structure is named, and the model can only learn the
union of structures, which is why SB's P0 scores are about half of the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, MeanIoU
from torch import nn
from torch.utils.data import DataLoader

from benchmark.data.records import EchoData
from benchmark.downstream_config import VLSegModelConfig
from benchmark.prompts import prompts_for
from benchmark.text_encoder import TextEncoder
from downstream.evaluation import Evaluation
from downstream.loading import seeded_loader
from downstream.prompt_tokens import PromptTokens
from downstream.segmentation import augmentation, distance_scores

STRUCTURES = {"LV": 1, "MYO": 2, "LA": 3}


class _Block(nn.Module):
    """Two 3x3 convs with group norm; FiLM after the block, from the text embedding."""

    def __init__(self, c_in: int, c_out: int, text_dim: int) -> None:
        super().__init__()
        groups = 8 if c_out % 8 == 0 else 1
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(groups, c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.GroupNorm(groups, c_out),
            nn.SiLU(),
        )
        self.film = nn.Linear(text_dim, 2 * c_out)
        # Start as identity (scale 1, shift 0) so text conditioning is learned, not imposed.
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(text)[:, :, None, None].chunk(2, dim=1)
        return self.body(x) * (1 + scale) + shift


class FiLMSegNet(nn.Module):
    """``(B, 1, H, W)`` image and ``(B, D)`` prompt embedding -> ``(B, 1, H, W)`` logits."""

    def __init__(self, channels: list[int], text_dim: int) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        c_prev = 1
        for c in channels:
            self.down.append(_Block(c_prev, c, text_dim))
            c_prev = c
        self.up = nn.ModuleList(
            _Block(channels[i + 1] + channels[i], channels[i], text_dim)
            for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x, text)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1), text)
        return self.head(x)


def build_model(cfg: VLSegModelConfig, text_dim: int) -> nn.Module:
    return FiLMSegNet(list(cfg.channels), text_dim)


class VisionLanguageSegTask:
    """Pairs, loss and metrics of prompted segmentation for any model ``m(image, text)``;
    ``encoder.encode(prompts)`` makes the model's text input (embeddings or tokens)."""

    primary_metric = "dice_mean"

    def __init__(
        self,
        prompt_kind: int,
        encoder: TextEncoder | PromptTokens,
        augment: bool = True,
        variant_policy: str = "fixed",
        prompt_seed: int = 0,
    ) -> None:
        if not 0 <= prompt_kind <= 7:
            raise ValueError(f"prompt kind must be 0-7, got {prompt_kind}")
        self.kind = prompt_kind
        self.encoder = encoder
        self.augment = augment
        self.policy = variant_policy
        self.prompt_seed = prompt_seed
        self.criterion = DiceCELoss(sigmoid=True)  # the BCE term is live for one channel

    def pairs(self, data: EchoData) -> tuple[np.ndarray, np.ndarray, torch.Tensor, list[str]]:
        """Every (image, structure) pair: image index ``(P,)``, binary targets
        ``(P, H, W)`` uint8, the encoded prompts ``(P, ...)`` and pair ids."""
        if data.masks is None:
            raise ValueError("vision-language segmentation needs label maps")
        index, targets, prompts, ids = [], [], [], []
        image_ids = data.sample_ids()
        for name, label in STRUCTURES.items():
            texts = prompts_for(data, self.kind, name, self.policy, self.prompt_seed)
            index.append(np.arange(len(data)))
            targets.append((data.masks == label).astype(np.uint8))
            prompts.extend(texts)
            ids.extend(f"{i}_{name}" for i in image_ids)
        return (
            np.concatenate(index),
            np.concatenate(targets),
            self.encoder.encode(prompts),
            ids,
        )

    def loader(
        self,
        data: EchoData,
        batch_size: int,
        train: bool,
        seed: int,
        device: torch.device | None = None,
    ) -> DataLoader:
        index, targets, text, _ = self.pairs(data)
        items = [
            {
                "image": data.images[i][None].astype(np.float32),
                "label": t[None].astype(np.float32),
                "text": e,
            }
            for i, t, e in zip(index, targets, text)
        ]
        # The same geometric and intensity jitter as 4-class segmentation (image and mask).
        transform = augmentation(data.images.shape[-1]) if train and self.augment else None
        return seeded_loader(items, transform, batch_size, train, seed, device)

    def loss(self, model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        logits = model(batch["image"].to(device).float(), batch["text"].to(device))
        return self.criterion(logits, batch["label"].to(device).float())

    @torch.no_grad()
    def predict(self, model: nn.Module, data: EchoData, device: torch.device, batch: int = 64):
        """Binary predictions ``(P, H, W)`` uint8, targets ``(P, H, W)``, pair ids and the
        ``(P,)`` index of each pair's image in ``data``."""
        model.eval()
        index, targets, text, ids = self.pairs(data)
        preds = []
        for s in range(0, len(index), batch):
            x = torch.from_numpy(data.images[index[s : s + batch], None]).float().to(device)
            logits = model(x, text[s : s + batch].to(device))
            preds.append((logits[:, 0] > 0).cpu().numpy().astype(np.uint8))
        return np.concatenate(preds), targets, ids, index

    def validate(self, model: nn.Module, data: EchoData, device: torch.device) -> float:
        pred, target, _, _ = self.predict(model, data, device)
        return float(binary_scores(pred, target)["dice"].mean())

    def evaluate(self, model: nn.Module, test: EchoData, device: torch.device) -> Evaluation:
        """Per (image, structure) Dice, IoU, HD95 and ASSD (pixels, and mm when every test
        image has a pixel spacing); means overall and, for Dice, per structure."""
        pred, target, ids, index = self.predict(model, test, device)
        scores = binary_scores(pred, target)
        spacing = test.spacing()
        columns = {"dice_mean": scores["dice"], "iou_mean": scores["iou"]}
        columns |= binary_distances(pred, target, None if spacing is None else spacing[index])
        per_sample = pd.DataFrame({"sample": ids, **columns})
        metrics = {name: float(values.mean()) for name, values in columns.items()}
        for name in STRUCTURES:
            rows = per_sample["sample"].str.endswith(f"_{name}")
            metrics[f"dice_{name.lower()}"] = float(per_sample.loc[rows, "dice_mean"].mean())
        return Evaluation(metrics, per_sample)


def binary_distances(
    pred: np.ndarray, target: np.ndarray, spacing: np.ndarray | None
) -> dict[str, np.ndarray]:
    """``hd95_mean`` and ``assd_mean`` ``(P,)`` in pixels of binary masks ``(P, H, W)`` and,
    with ``spacing`` ``(P, 2)`` (each pair's row, col in mm), ``hd95_mm_mean`` and
    ``assd_mm_mean``: segmentation's surface distances (a missed structure scores the image
    diagonal), named as its means over structures so that both tasks fill one table."""
    p = torch.from_numpy(np.stack([1 - pred, pred], axis=1).astype(np.float32))
    t = torch.from_numpy(np.stack([1 - target, target], axis=1).astype(np.float32))
    return {f"{name}_mean": d[:, 0] for name, d in distance_scores(p, t, spacing).items()}


def binary_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Dice and IoU of binary masks ``(P, H, W)``; an empty target predicted empty scores 1."""
    p = torch.from_numpy(pred[:, None].astype(np.float32))
    t = torch.from_numpy(target[:, None].astype(np.float32))
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(p, t)
    return {"dice": dice[:, 0].numpy(), "iou": iou[:, 0].numpy()}
