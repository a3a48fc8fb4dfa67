"""Image classification (DE's second task): ED vs ES by default, view or quality as options.

A MONAI classifier network (a residual conv ``Classifier`` or ``resnet18``) trained with
cross-entropy; reported on real test images with accuracy, balanced accuracy, macro F1 and
AUROC (torchmetrics), plus per-sample correctness and the probability of the true class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from monai.networks.nets import Classifier, resnet18
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

from benchmark.data.records import EchoData
from benchmark.downstream_config import ClsModelConfig
from downstream.augment import BatchAugment
from downstream.evaluation import Evaluation
from downstream.loading import seeded_loader

# The label values of each target, in class-index order (CAMUS metadata values).
TARGETS = {
    "phase": ("ED", "ES"),
    "view": ("2CH", "4CH"),
    "quality": ("Good", "Medium", "Poor"),
}
# What early stopping follows (downstream.cls.select_on): validation loss or accuracy.
SELECT_ON = ("loss", "accuracy")


def build_model(cfg: ClsModelConfig, size: int) -> torch.nn.Module:
    n_classes = len(TARGETS[cfg.target])
    if cfg.network == "resnet18":
        return resnet18(spatial_dims=2, n_input_channels=1, num_classes=n_classes)
    return Classifier(
        in_shape=(1, size, size),
        classes=n_classes,
        channels=tuple(cfg.channels),
        strides=(2,) * len(cfg.channels),
        num_res_units=cfg.num_res_units,
        dropout=cfg.dropout or None,
    )


def class_indices(data: EchoData, target: str) -> np.ndarray:
    """``(N,)`` int64 class index of each image; a clear error if any label is missing."""
    values = TARGETS[target]
    column = data.meta[target]
    bad = sorted({str(v) for v in column if v not in values})
    if bad:
        raise ValueError(
            f"classification target {target!r} needs labels in {list(values)}; found {bad} "
            "(mask-free synthetic images carry no view/phase unless "
            "generator.class_conditional is true)"
        )
    return np.array([values.index(v) for v in column], dtype=np.int64)


def augmentation(size: int) -> BatchAugment:
    """Geometric and contrast jitter that keeps the label (phase, view, quality) intact:
    ±10° rotation, translate 10 %, scale 0.9–1.1 (0.8), gamma contrast 0.7–1.5 (0.5)."""
    return BatchAugment(warp=("image",))


class ClassificationTask:
    primary_metric = "accuracy"

    def __init__(
        self, target: str = "phase", augment: bool = True, select_on: str = "loss"
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"classification target must be one of {list(TARGETS)}")
        if select_on not in SELECT_ON:
            raise ValueError(f"classification select_on must be one of {list(SELECT_ON)}")
        self.target = target
        self.augment = augment
        self.select_on = select_on
        self.n_classes = len(TARGETS[target])

    def loader(
        self,
        data: EchoData,
        batch_size: int,
        train: bool,
        seed: int,
        device: torch.device | None = None,
    ) -> DataLoader:
        labels = class_indices(data, self.target)
        items = [
            {"image": img[None].astype(np.float32), "label": int(lab)}
            for img, lab in zip(data.images, labels)
        ]
        transform = augmentation(data.images.shape[-1]) if train and self.augment else None
        return seeded_loader(items, transform, batch_size, train, seed, device)

    def loss(self, model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        logits = model(batch["image"].to(device).float())
        return torch.nn.functional.cross_entropy(logits, batch["label"].to(device).long())

    @torch.no_grad()
    def probabilities(
        self, model: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 128
    ) -> torch.Tensor:
        """``(N, H, W)`` images -> ``(N, n_classes)`` softmax probabilities on CPU."""
        model.eval()
        out = [
            model(torch.from_numpy(images[i : i + batch, None]).float().to(device)).softmax(1).cpu()
            for i in range(0, len(images), batch)
        ]
        return torch.cat(out) if out else torch.zeros((0, self.n_classes))

    def validate(self, model: torch.nn.Module, data: EchoData, device: torch.device) -> float:
        return self.validation(model, data, device)[0]

    def validation(
        self, model: torch.nn.Module, data: EchoData, device: torch.device
    ) -> tuple[float, float]:
        """(accuracy, selection score) from one pass over ``data``. The selection score,
        which early stopping follows, is minus the mean cross-entropy with ``select_on``
        "loss" (on a small validation set accuracy moves in steps of 1/n and ties, and early
        stopping then keeps an early epoch: docs/DOWNSTREAM.md), else the accuracy."""
        probs = self.probabilities(model, data.images, device)
        labels = torch.from_numpy(class_indices(data, self.target))
        accuracy = float((probs.argmax(1) == labels).float().mean())
        if self.select_on != "loss":
            return accuracy, accuracy
        true = probs[torch.arange(len(labels)), labels].clamp_min(1e-12)
        return accuracy, float(true.log().mean())

    def evaluate(self, model: torch.nn.Module, test: EchoData, device: torch.device) -> Evaluation:
        probs = self.probabilities(model, test.images, device)
        labels = torch.from_numpy(class_indices(test, self.target))
        metrics = classification_metrics(probs, labels, self.n_classes)
        per_sample = pd.DataFrame(
            {
                "sample": test.sample_ids(),
                "accuracy": (probs.argmax(1) == labels)
                .float()
                .numpy(),  # 0/1: its mean is accuracy
                "p_true": probs[torch.arange(len(labels)), labels].numpy(),
            }
        )
        return Evaluation(metrics, per_sample)


def classification_metrics(
    probs: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> dict[str, float]:
    """Accuracy, balanced accuracy (macro recall), macro F1 and macro one-vs-rest AUROC."""
    k = {"num_classes": n_classes}
    metrics = {
        "accuracy": multiclass_accuracy(probs, labels, average="micro", **k),
        "balanced_accuracy": multiclass_accuracy(probs, labels, average="macro", **k),
        "f1_macro": multiclass_f1_score(probs, labels, average="macro", **k),
    }
    # AUROC is undefined when the test set lacks a class; report NaN rather than a number.
    present = len(torch.unique(labels)) == n_classes
    metrics["auroc"] = (
        multiclass_auroc(probs, labels, average="macro", **k) if present else torch.tensor(np.nan)
    )
    return {name: float(value) for name, value in metrics.items()}
