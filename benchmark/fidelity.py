"""Fidelity of a synthetic set against the real training split, in an echo encoder's features.

InceptionV3 weights are not available offline, so distances are measured in the features of a
small encoder trained here on the real training split (view x phase classification; the
standard FID, when a weights file is given, is :mod:`benchmark.inception`'s): the
Fréchet distance (reported as ``fd_echo``, never as FID) and KID through torchmetrics with this
encoder as the custom feature extractor, and improved precision / recall (Kynkäänniemi et al.,
2019: k-NN balls in feature space). Conditioning fidelity is the encoder's accuracy at
predicting the view x phase a synthetic image was conditioned on (or inherited); mask alignment
is the Dice between a synthetic image's label map and a real-trained segmenter's prediction on
it (the caller brings the predictions: segmenters live in ``downstream``, and
``sweeps/fidelity.py`` trains one per dataset and runs it on every synthetic set). Copies
(:func:`memorisation`) are synthetic images nearer to an image the generator was trained on
than any new real image is: a small training set invites a generator to replay it, which
lowers FD without adding anything a segmenter has not seen. The intensity distance
(:func:`intensity_distance`) compares the sets' grey-level histograms: the encoder's group
norms and its training's contrast jitter make its features blind to a global brightness
error, such as a grey background where echo is black.

Every result carries its recipe (extractor, weights hash, resolution, numbers of images,
reference split), since values are comparable only under the same recipe.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from benchmark.data.records import EchoData

# The encoder's classes: DE's view x phase classes, index = CLASSES.index((view, phase)).
CLASSES = (("2CH", "ED"), ("2CH", "ES"), ("4CH", "ED"), ("4CH", "ES"))
EXTRACTOR = "echo-encoder"


def class_index(data: EchoData) -> np.ndarray:
    """``(N,)`` class index per image; -1 where view or phase is not a known pair."""
    pairs = zip(data.meta["view"], data.meta["phase"])
    return np.array([CLASSES.index(p) if p in CLASSES else -1 for p in pairs], dtype=np.int64)


class EchoEncoder(nn.Module):
    """A small conv encoder: ``(B, 1, H, W)`` images in [0, 1] (any H, W) -> ``(B, dim)``
    features (``forward``, what torchmetrics calls) and ``(B, 4)`` class logits (``logits``).

    Five stride-2 stages: view and phase are a matter of the chambers' layout and size, which
    the three stages it had did not see whole (at 64 px they stayed at chance on the phantom's
    real test images; docs/GENERATORS.md).
    """

    def __init__(self, dim: int = 128, channels: tuple[int, ...] = (16, 32, 64, 128, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1),
                nn.GroupNorm(min(8, c), c),
                nn.SiLU(),
            ]
            c_in = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, dim)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dim, len(CLASSES))
        self.num_features = dim  # read by torchmetrics instead of probing a 299 px image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float() * 2 - 1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self(images))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, dim)`` features (``forward``'s) -> ``(B, 4)`` class logits."""
        return self.head(torch.nn.functional.silu(features))


def train_encoder(
    real_train: EchoData,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    augment: Callable[[dict, torch.Generator], dict] | None = None,
) -> EchoEncoder:
    """An :class:`EchoEncoder` trained on ``real_train`` to classify view x phase; eval mode,
    on CPU. Images with an unknown pair are ignored. Deterministic per seed on CPU.

    ``augment(batch, generator)`` (downstream's label-keeping ``BatchAugment``, passed in by
    the caller: this layer does not import downstream) jitters each batch ``{"image": (B, 1,
    H, W)}`` with draws of its own stream: the few real training images are otherwise learnt
    by heart (training accuracy 1, test accuracy 0.53 on the controls preset's phantom)."""
    if (real_train.meta["split"] != "train").any():
        raise ValueError("the fidelity encoder trains on the real training split only")
    labels = class_index(real_train)
    keep = labels >= 0
    if keep.sum() < 2:
        raise ValueError("the fidelity encoder needs >= 2 training images with view and phase")
    x = torch.from_numpy(real_train.images[keep]).float()[:, None]
    y = torch.from_numpy(labels[keep])
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        model = EchoEncoder().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    draws = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        batch = x[idx] if augment is None else augment({"image": x[idx]}, draws)["image"]
        loss = nn.functional.cross_entropy(model.logits(batch.to(device)), y[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.cpu().eval()


def weights_hash(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's parameters and buffers, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def features(model: EchoEncoder, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """``(N, H, W)`` images in [0, 1] -> ``(N, dim)`` float32 features."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of ``fake (M, D)`` against ``real (N, D)`` features.

    Each set's manifold is the union of balls around its points with radius the distance to
    the point's k-th nearest neighbour in the same set. Precision: share of fake points inside
    the real manifold; recall: share of real points inside the fake manifold.
    """

    def radii(x: torch.Tensor) -> torch.Tensor:
        if len(x) <= k:
            raise ValueError(f"precision/recall with k={k} needs more than {k} images per set")
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # +1: the point itself

    def covered(points: torch.Tensor, centres: torch.Tensor, r: torch.Tensor) -> float:
        return (torch.cdist(points, centres) <= r[None]).any(dim=1).float().mean().item()

    real, fake = real.double(), fake.double()
    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """torchmetrics' Fréchet distance between ``real (N, D)`` and ``fake (M, D)`` features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=GivenFeatures(real.shape[1]))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


def feature_distances(
    real: torch.Tensor,
    fake: torch.Tensor,
    kid_subsets: int = 10,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Fréchet distance and KID (mean, std over ``kid_subsets`` random subsets of
    ``min(kid_subset_size, N, M)``, drawn from a generator seeded ``seed``) between
    ``real (N, D)`` and ``fake (M, D)`` features, by torchmetrics. Any extractor's features:
    the echo encoder's here, InceptionV3's in :mod:`benchmark.inception`."""
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(kid_subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "features kept in a buffer": intended, sets are small
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=GivenFeatures(real.shape[1]), subsets=kid_subsets, subset_size=subset
        )
    kid.update(real, real=True)
    kid.update(fake, real=False)
    # KID draws its subsets from torch's global stream: seeded here, so that one set measured
    # twice (or in another process) gets one value, and the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fd": frechet_distance(real, fake),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
    }


def distribution_fidelity(
    model: EchoEncoder,
    real_images: np.ndarray,
    synthetic_images: np.ndarray,
    k: int = 3,
    kid_subsets: int = 10,
    kid_subset_size: int = 1000,
    reference_split: str = "train",
    seed: int = 0,
    real_features: torch.Tensor | None = None,
    synthetic_features: torch.Tensor | None = None,
) -> dict[str, float | int | str]:
    """``fd_echo``, ``kid_echo_mean``/``_std``, ``precision``, ``recall`` and the recipe
    (``seed``: of KID's random subsets).

    ``real_images`` ``(N, H, W)`` (the reference, from ``reference_split``) and
    ``synthetic_images`` ``(M, H, W)``, both in [0, 1] at the same resolution. Each set is
    encoded once, for all four measures; ``real_features`` ``(N, dim)`` and
    ``synthetic_features`` ``(M, dim)``, when given, are ``features(model, images)`` of
    that set already computed (one reference against several sets; a set whose features
    also judge its conditioning).
    """
    if real_images.shape[1:] != synthetic_images.shape[1:]:
        raise ValueError(f"resolutions differ: {real_images.shape} vs {synthetic_images.shape}")
    real = _given_features(model, real_images, real_features, "real")
    fake = _given_features(model, synthetic_images, synthetic_features, "synthetic")
    distances = feature_distances(real, fake, kid_subsets, kid_subset_size, seed)
    precision, recall = precision_recall(real, fake, k)
    return {
        "fd_echo": distances["fd"],
        "kid_echo_mean": distances["kid_mean"],
        "kid_echo_std": distances["kid_std"],
        "precision": precision,
        "recall": recall,
        "extractor": EXTRACTOR,
        "weights_hash": weights_hash(model),
        "resolution": int(real_images.shape[-1]),
        "n_real": len(real_images),
        "n_synthetic": len(synthetic_images),
        "reference_split": reference_split,
        "k": k,
    }


def _given_features(
    model: EchoEncoder, images: np.ndarray, computed: torch.Tensor | None, name: str
) -> torch.Tensor:
    """``computed`` ``(N, dim)``, the features of ``images`` ``(N, H, W)`` computed before,
    checked against them by count; or, when None, ``features(model, images)``."""
    if computed is None:
        return features(model, images)
    if len(computed) != len(images):
        raise ValueError(f"{len(computed)} {name} features for {len(images)} {name} images")
    return computed


def fd_ratio_interval(
    real: torch.Tensor,
    fake: torch.Tensor,
    reference: torch.Tensor,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of FD(real, fake) / FD(real, reference) on features
    ``real (N, D)``, ``fake (M, D)`` and ``reference (M, D)``, where ``fake[i]`` and
    ``reference[i]`` pair up (two samplers from the same initial noise): each resample draws
    the real rows, and one set of indices for both paired sets, with replacement, from a
    generator seeded ``seed``; the Fréchet distances are torchmetrics'. What a ratio of two
    distances on a few hundred images is worth: the sets' sampling noise alone moves it."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if fake.shape != reference.shape:
        raise ValueError(
            f"paired sets differ in shape: {tuple(fake.shape)} vs {tuple(reference.shape)}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    fid = FrechetInceptionDistance(feature=GivenFeatures(real.shape[1]))

    def fd(a: torch.Tensor, b: torch.Tensor) -> float:
        fid.reset()
        fid.update(a, real=True)
        fid.update(b, real=False)
        return float(fid.compute())

    gen = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(resamples):
        rows = torch.randint(len(real), (len(real),), generator=gen)
        pairs = torch.randint(len(fake), (len(fake),), generator=gen)
        ratios.append(fd(real[rows], fake[pairs]) / fd(real[rows], reference[pairs]))
    tail = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(ratios), [tail, 1 - tail])
    return float(lo), float(hi)


class GivenFeatures(nn.Module):
    """The identity on ``(B, num_features)`` features: torchmetrics' FID and KID on features
    computed once, not per metric."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.no_grad()
def conditioning_accuracies(
    model: EchoEncoder, synthetic: EchoData, synthetic_features: torch.Tensor | None = None
) -> dict[str, float]:
    """Shares of synthetic images whose recorded view x phase (``view_phase``), view
    (``view``) and phase (``phase``) the encoder predicts, from its one view x phase
    prediction per image (NaN when no image has a known pair). ``view`` is what issue 4's
    target names: a text generator asked for a 2CH view that draws it at the wrong phase
    still followed the view. ``synthetic_features`` ``(N, dim)``: the images' features
    computed before (for FD), classified instead of encoding the images again."""
    labels = class_index(synthetic)
    keep = labels >= 0
    if not keep.any():
        return {"view_phase": math.nan, "view": math.nan, "phase": math.nan}
    if synthetic_features is not None:
        feats = _given_features(model, synthetic.images, synthetic_features, "synthetic")
        pred = model.classify(feats[torch.from_numpy(keep)]).argmax(1)
    else:
        x = torch.from_numpy(synthetic.images[keep]).float()[:, None]
        pred = torch.cat([model.logits(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    pred, labels = pred.numpy(), labels[keep]
    classes = np.array(CLASSES)  # (4, 2): view, phase of each class
    return {
        "view_phase": float((pred == labels).mean()),
        "view": float((classes[pred, 0] == classes[labels, 0]).mean()),
        "phase": float((classes[pred, 1] == classes[labels, 1]).mean()),
    }


def conditioning_accuracy(
    model: EchoEncoder, synthetic: EchoData, synthetic_features: torch.Tensor | None = None
) -> float:
    """The view x phase share of :func:`conditioning_accuracies`."""
    return conditioning_accuracies(model, synthetic, synthetic_features)["view_phase"]


def mask_alignment(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean Dice per structure (``dice_LV``, ``dice_MYO``, ``dice_LA``) and ``dice_mean``
    between ``(N, H, W)`` label maps a real-trained segmenter predicts on synthetic images and
    the images' own label maps. A structure absent from both maps of an image is skipped."""
    if predicted.shape != labels.shape:
        raise ValueError(f"shapes differ: {predicted.shape} vs {labels.shape}")
    out = {}
    for label, name in ((1, "LV"), (2, "MYO"), (3, "LA")):
        p = (predicted == label).reshape(len(labels), -1)
        t = (labels == label).reshape(len(labels), -1)
        denom = p.sum(1) + t.sum(1)
        present = denom > 0
        dice = 2 * (p & t).sum(1)[present] / denom[present]
        out[f"dice_{name}"] = float(dice.mean()) if present.any() else math.nan
    out["dice_mean"] = float(np.nanmean([out["dice_LV"], out["dice_MYO"], out["dice_LA"]]))
    return out


def nearest_distances(images: np.ndarray, train: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(N,)`` root-mean-square pixel difference between each of ``images`` ``(N, H, W)``
    and its nearest image in ``train`` ``(M, H, W)`` (both in [0, 1])."""
    t = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float64)).flatten(1)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64)).flatten(1)
    nearest = [torch.cdist(x[i : i + batch_size], t).amin(1) for i in range(0, len(x), batch_size)]
    return (torch.cat(nearest) / math.sqrt(t.shape[1])).numpy()


def memorisation(
    train: np.ndarray,
    synthetic: np.ndarray,
    reference: np.ndarray,
    reference_nearest: np.ndarray | None = None,
) -> dict[str, float | int]:
    """How close synthetic images ``(M, H, W)`` come to the generator's training images
    ``train`` ``(K, H, W)``, measured against new real images ``reference`` ``(N, H, W)``
    (patients the generator never saw), all in [0, 1], in pixels (a copy is a copy in any
    feature space).

    ``copy_share``: share of synthetic images nearer to a training image than every reference
    image is (RMS difference). A generator that draws new patients gives about
    ``1 / (N + 1)``; one that replays its training set, up to 1.
    ``nn_ratio``: median nearest-training distance of the synthetic images over that of the
    reference images (below 1: nearer to the training set than new patients are).
    ``reference_nearest`` ``(N,)``: ``nearest_distances(reference, train)`` computed before
    (one reference against several sets).
    """
    if not train.shape[1:] == synthetic.shape[1:] == reference.shape[1:]:
        raise ValueError(
            f"resolutions differ: train {train.shape}, synthetic {synthetic.shape}, "
            f"reference {reference.shape}"
        )
    ours = nearest_distances(synthetic, train)
    if reference_nearest is None:
        theirs = nearest_distances(reference, train)
    elif len(reference_nearest) == len(reference):
        theirs = reference_nearest
    else:
        raise ValueError(f"{len(reference_nearest)} distances for {len(reference)} references")
    return {
        "copy_share": float((ours < theirs.min()).mean()),
        "nn_ratio": float(np.median(ours) / np.median(theirs)),
        "n_train": len(train),
    }


# Grey levels of the intensity histograms: the 8-bit levels images are stored in.
INTENSITY_LEVELS = 256


def intensity_histogram(images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(INTENSITY_LEVELS,)`` share of the pixels of ``images`` ``(N, H, W)`` in [0, 1] at
    each 8-bit grey level, in batches: a large set is not copied whole.

    Bin k is centred on k / 255 (a pixel goes to its nearest level): with edges at k / 256
    instead, a real level sat at its bin's lower edge, so synthetic pixels a fraction of a
    level darker dropped a whole level while brighter ones did not move.
    """
    half = 0.5 / (INTENSITY_LEVELS - 1)
    counts = np.zeros(INTENSITY_LEVELS, dtype=np.int64)
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        counts += np.histogram(batch, INTENSITY_LEVELS, (-half, 1.0 + half))[0]
    return counts / counts.sum()


def intensity_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Wasserstein-1 distance between the pixel-intensity distributions of ``real``
    ``(N, H, W)`` and ``synthetic`` ``(M, H, W)`` (both in [0, 1]), in 8-bit grey levels:
    how far, on average, a pixel's grey level must move to turn one set's histogram into
    the other's. A set 10 levels too bright everywhere scores 10."""
    from scipy.stats import wasserstein_distance

    levels = np.arange(INTENSITY_LEVELS, dtype=np.float64)
    hist = intensity_histogram(real), intensity_histogram(synthetic)
    return float(wasserstein_distance(levels, levels, *hist))
