"""4-class segmentation (DE's task): MONAI U-Net or nnU-Net's DynUNet, Dice + cross-entropy
(deeply supervised with DynUNet's lower outputs when asked), MONAI metrics.

Labels: 0 background, 1 LV cavity, 2 LV myocardium, 3 left atrium. Scores are reported
per structure (background excluded) on real test images: Dice, IoU, and the 95th-percentile
Hausdorff distance (HD95) and average symmetric surface distance (ASSD, CAMUS's "mean
absolute distance") in pixels and, when every test image has a pixel spacing, in mm, with
the clinical indices of ``downstream.volumes`` (EF, EDV and ESV errors); over all test
images and per cardiac phase (ED, ES).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.metrics import DiceMetric, MeanIoU
from monai.metrics.utils import get_edge_surface_distance
from monai.networks.nets import DynUNet, UNet

from benchmark.data.records import EchoData
from benchmark.downstream_config import SegModelConfig
from downstream.augment import BatchAugment
from downstream.evaluation import Evaluation
from downstream.loading import seeded_loader
from downstream.volumes import agreement, index_errors, lv_indices

STRUCTURES = {1: "lv", 2: "myo", 3: "la"}
N_CLASSES = 4
# CAMUS scores the LV epicardium, the cavity and the myocardium together, where other work
# scores the myocardium: both are measured; ``*_mean`` stays over STRUCTURES.
EPICARDIUM = "epi"
# Scores also averaged per cardiac phase (``<metric>_ed``, ``<metric>_es``): CAMUS and the
# methods compared on it report ED and ES apart, ES being the harder phase.
PHASE_METRICS = (
    "dice_lv",
    "dice_myo",
    "dice_la",
    "dice_epi",
    "dice_mean",
    "hd95_mean",
    "assd_mean",
    "hd95_mm_mean",
    "assd_mm_mean",
)


def build_model(cfg: SegModelConfig) -> torch.nn.Module:
    """A fresh ``cfg.network``: ``(B, 1, H, W)`` images -> ``(B, 4, H, W)`` logits; a
    ``dynunet`` with deep supervision returns ``(B, 1 + deep_supervision, 4, H, W)`` in
    training mode (the lower outputs upsampled to full size) and the full output only in
    evaluation mode."""
    if cfg.network == "dynunet":
        levels = len(cfg.channels)
        return DynUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=N_CLASSES,
            kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1),  # nnU-Net: the first level keeps the size
            upsample_kernel_size=[2] * (levels - 1),
            filters=list(cfg.channels),
            dropout=cfg.dropout or None,
            res_block=cfg.num_res_units > 0,
            deep_supervision=cfg.deep_supervision > 0,
            deep_supr_num=max(cfg.deep_supervision, 1),
        )
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=N_CLASSES,
        channels=tuple(cfg.channels),
        strides=(2,) * (len(cfg.channels) - 1),
        num_res_units=cfg.num_res_units,
        dropout=cfg.dropout,
    )


def deep_supervision_weights(outputs: int) -> list[float]:
    """nnU-Net's weights of ``outputs`` supervised outputs, full resolution first: halved
    at each lower level and normalised to sum to 1, so the loss keeps the scale of one
    output's (and the learning rate its meaning)."""
    raw = [0.5**level for level in range(outputs)]
    return [w / sum(raw) for w in raw]


def augmentation(size: int) -> BatchAugment:
    """DE's augmentation, drawn per image and applied per batch: ±10° rotation, translate
    10 %, scale 0.9–1.1 (probability 0.8; the label map warped with nearest neighbours),
    brightness ×(1 ± 0.3) and gamma contrast 0.7–1.5 (0.5 each). ``size`` is kept for the
    callers: the warp works in fractions of the side."""
    return BatchAugment(warp=("image", "label"), nearest=("label",), p_intensity=0.5)


class SegmentationTask:
    primary_metric = "dice_mean"

    def __init__(self, augment: bool = True, deep_supervision: int = 0) -> None:
        self.augment = augment
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)
        # A deeply supervised output (B, 1 + deep_supervision, 4, H, W): the weighted sum of
        # each output's Dice + CE against the full-size labels.
        weights = deep_supervision_weights(1 + deep_supervision)
        self.deep_criterion = DeepSupervisionLoss(self.criterion, weights=weights)

    def loader(
        self,
        data: EchoData,
        batch_size: int,
        train: bool,
        seed: int,
        device: torch.device | None = None,
    ) -> torch.utils.data.DataLoader:
        if data.masks is None:
            raise ValueError("segmentation needs label maps")
        items = [
            {"image": img[None].astype(np.float32), "label": msk[None].astype(np.float32)}
            for img, msk in zip(data.images, data.masks)
        ]
        transform = augmentation(data.images.shape[-1]) if train and self.augment else None
        return seeded_loader(items, transform, batch_size, train, seed, device)

    def loss(self, model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        logits = model(batch["image"].to(device).float())
        labels = batch["label"].to(device).float()
        if logits.dim() == 5:  # deep supervision (training mode)
            return self.deep_criterion(list(logits.unbind(1)), labels)
        return self.criterion(logits, labels)

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 64
    ) -> np.ndarray:
        """``(N, H, W)`` images -> ``(N, H, W)`` uint8 label maps."""
        model.eval()
        out = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch, None]).float().to(device)
            out.append(model(x).argmax(1).cpu().numpy().astype(np.uint8))
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.uint8)

    def validate(self, model: torch.nn.Module, data: EchoData, device: torch.device) -> float:
        pred = self.predict(model, data.images, device)
        return float(per_sample_scores(pred, data.masks, with_hd95=False)["dice_mean"].mean())

    def evaluate(self, model: torch.nn.Module, test: EchoData, device: torch.device) -> Evaluation:
        """Mean test metrics, the per-sample table (one row per test image) and, when every
        test image has a pixel spacing, the LV indices per patient with their errors."""
        pred = self.predict(model, test.images, device)
        spacing = test.spacing()
        per_sample = per_sample_scores(pred, test.masks, with_hd95=True, spacing=spacing)
        per_sample.insert(0, "sample", test.sample_ids())
        metrics = {c: float(per_sample[c].mean()) for c in per_sample.columns if c != "sample"}
        metrics |= phase_means(per_sample, test.meta["phase"])
        if spacing is None:  # volumes need mm
            return Evaluation(metrics, per_sample)
        reference = lv_indices(test.masks, test.meta, spacing)
        per_patient = agreement(lv_indices(pred, test.meta, spacing), reference)
        metrics |= index_errors(per_patient)
        return Evaluation(metrics, per_sample, per_patient if len(per_patient) else None)


def phase_means(per_sample: pd.DataFrame, phase: pd.Series) -> dict[str, float]:
    """``<m>_ed`` and ``<m>_es``: the means of each :data:`PHASE_METRICS` column ``m`` of
    ``per_sample`` over its ED and its ES rows (``phase``: one value per row); nothing for a
    phase without images."""
    phase = phase.astype(str).to_numpy()
    out = {}
    for name in ("ED", "ES"):
        rows = phase == name
        if not rows.any():
            continue
        for metric in PHASE_METRICS:
            if metric in per_sample.columns:
                values = per_sample[metric].to_numpy(dtype=float)[rows]
                out[f"{metric}_{name.lower()}"] = float(values.mean())
    return out


def per_sample_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    with_hd95: bool,
    spacing: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-image, per-structure scores of label maps ``(N, H, W)``.

    Columns: ``dice_<s>`` and ``iou_<s>`` for s in lv, myo, la and epi (CAMUS's LV
    epicardium: lv and myo together), and with ``with_hd95`` the distances ``hd95_<s>`` and
    ``assd_<s>`` in pixels, plus ``hd95_mm_<s>`` and ``assd_mm_<s>`` when ``spacing``
    ``(N, 2)`` (row, col in mm) is given; each with its ``*_mean`` over lv, myo and la.
    An empty prediction of a present structure has Dice 0 and, for the distances, the image
    diagonal (the worst possible distance) instead of MONAI's inf/nan, so means stay finite;
    a structure absent from both maps has distance 0.
    """
    p = _with_epicardium(_onehot(pred))
    t = _with_epicardium(_onehot(truth))
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, t)
    iou = MeanIoU(include_background=False, reduction="none", ignore_empty=False)(p, t)
    scores = {"dice": dice.numpy(), "iou": iou.numpy()}
    if with_hd95:
        scores |= distance_scores(p, t, spacing)
    cols: dict[str, np.ndarray] = {}
    names = (*STRUCTURES.values(), EPICARDIUM)
    for name, values in scores.items():
        for j, s in enumerate(names):
            cols[f"{name}_{s}"] = values[:, j]
        cols[f"{name}_mean"] = values[:, : len(STRUCTURES)].mean(axis=1)
    return pd.DataFrame(cols)


def distance_scores(
    p: torch.Tensor, t: torch.Tensor, spacing: np.ndarray | None
) -> dict[str, np.ndarray]:
    """``hd95`` and ``assd`` ``(N, C)`` in pixels of one-hot maps ``(N, C + 1, H, W)`` and,
    with ``spacing`` ``(N, 2)`` (row, col in mm), ``hd95_mm`` and ``assd_mm``; a missed
    structure scores the image diagonal in the same unit (:func:`surface_distances`)."""
    size = np.array(p.shape[2:], dtype=float)
    out = dict(zip(("hd95", "assd"), surface_distances(p, t, None, float(np.hypot(*size)))))
    if spacing is not None:
        diagonal = np.hypot(*(spacing * size).T)[:, None]
        out |= dict(zip(("hd95_mm", "assd_mm"), surface_distances(p, t, spacing, diagonal)))
    return out


def surface_distances(
    p: torch.Tensor, t: torch.Tensor, spacing: np.ndarray | None, worst: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """HD95 and ASSD ``(N, C)`` of one-hot maps ``(N, C + 1, H, W)`` (channel 0, the
    background, is skipped), in the unit of ``spacing`` ``(N, 2)`` (pixels when None). A
    structure empty in one map only (a missed or an invented structure) scores ``worst``; one
    empty in both scores 0.

    One pass of MONAI's edge surface distances per image and structure serves both, reduced
    as ``compute_hausdorff_distance`` (the larger directed 95th percentile) and
    ``compute_average_surface_distance(symmetric=True)`` (the mean over both edge sets) do.
    """
    n, n_struct = p.shape[0], p.shape[1] - 1
    hd = np.full((n, n_struct), np.inf)
    assd = np.full((n, n_struct), np.inf)
    with warnings.catch_warnings():
        # MONAI warns about its own deprecated argument and about empty maps, whose
        # infinite distances are handled below.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", "the prediction of class", UserWarning)
        warnings.filterwarnings("ignore", "the ground truth of class", UserWarning)
        for b, c in np.ndindex(n, n_struct):
            _, both, _ = get_edge_surface_distance(
                p[b, c + 1],
                t[b, c + 1],
                spacing=None if spacing is None else tuple(spacing[b]),
                symmetric=True,
            )
            if any(len(d) == 0 for d in both):
                if not (p[b, c + 1].any() or t[b, c + 1].any()):
                    hd[b, c] = assd[b, c] = 0.0  # rightly empty: no error
                continue  # one map empty: no distance (worst below)
            hd[b, c] = max(float(torch.quantile(d.float(), 0.95)) for d in both)
            assd[b, c] = float(torch.cat(both).float().mean())
    return tuple(np.where(np.isfinite(v), v, worst) for v in (hd, assd))


def _with_epicardium(onehot: torch.Tensor) -> torch.Tensor:
    """``(N, 4, H, W)`` one-hot maps -> ``(N, 5, H, W)``, channel 4 the LV cavity and
    myocardium together (the channels then overlap; each is scored on its own)."""
    return torch.cat([onehot, onehot[:, 1:2] + onehot[:, 2:3]], dim=1)


def _onehot(labels: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(labels.astype(np.int64))
    return torch.nn.functional.one_hot(t, N_CLASSES).permute(0, 3, 1, 2).float()
