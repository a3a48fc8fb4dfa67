"""Appearance statistics of echo images, and the phantom-vs-real check behind docs/DATA.md.

Two statistics are compared inside the ultrasound sector: the intensity histogram (mean, std,
percentiles) and the speckle grain size, the full width at half maximum of the normalised
autocorrelation of small patches along the axial (vertical) and lateral (horizontal) axes.
Grain sizes only compare at the same pixel spacing, so the phantom is resampled until its
sector depth in pixels equals the real frame's; they are also reported in units of sector depth.

Run ``python -m benchmark.data.appearance [--figure docs/figures/phantom_vs_real.png]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from pydicom import examples
from scipy import ndimage as ndi

from benchmark.data.dicom import read_cine
from benchmark.data.normalise import resize_image, resize_labels
from benchmark.data.phantom import SECTOR_DEPTH, make_phantom, phantom_sector
from benchmark.data.sector import cine_sector, sector_depth

PATCH = 16  # autocorrelation patch side in pixels: several grains, little anatomy


def intensity_stats(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean, std and percentiles of ``(N, H, W)`` intensities in [0, 1] where ``masks``."""
    values = images[masks.astype(bool)]
    p = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        **{f"p{q}": float(v) for q, v in zip((5, 25, 50, 75, 95), p)},
    }


def _fwhm(profile: np.ndarray) -> float:
    """Full width at half maximum of a symmetric profile peaking (at 1) in its centre."""
    c = len(profile) // 2
    i = c
    while i + 1 < len(profile) and profile[i + 1] > 0.5:
        i += 1
    if i + 1 == len(profile):
        return float(2 * (i - c))
    return float(2 * (i - c + (profile[i] - 0.5) / (profile[i] - profile[i + 1])))


def autocorrelation(images: np.ndarray, masks: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Mean normalised autocorrelation ``(2 * patch, 2 * patch)`` of in-sector patches.

    Patches on a ``patch``-pixel grid that lie wholly inside ``masks`` (``(N, H, W)`` bool)
    are mean-removed and autocorrelated via a zero-padded FFT, each lag divided by its number
    of pixel pairs; lag 0 is at the centre.
    """
    lags = np.arange(-patch, patch)
    # Unbiased estimate: divide each lag by the number of pixel pairs it averages.
    overlap = np.maximum(patch - np.abs(lags), 1)[:, None] * np.maximum(patch - np.abs(lags), 1)
    acs = []
    for img, m in zip(images, masks):
        inside = ndi.binary_erosion(m.astype(bool), np.ones((patch, patch)), border_value=0)
        for r in range(0, img.shape[0] - patch + 1, patch):
            for c in range(0, img.shape[1] - patch + 1, patch):
                if not inside[r + patch // 2, c + patch // 2]:
                    continue
                p = img[r : r + patch, c : c + patch].astype(np.float64)
                p = p - p.mean()
                f = np.fft.rfft2(p, s=(2 * patch, 2 * patch))
                ac = np.fft.fftshift(np.fft.irfft2(np.abs(f) ** 2, s=(2 * patch, 2 * patch)))
                ac /= overlap
                if ac[patch, patch] > 1e-12:
                    acs.append(ac / ac[patch, patch])
    if not acs:
        raise ValueError("no patch lies wholly inside the sector")
    return np.mean(acs, axis=0)


def grain_size(images: np.ndarray, masks: np.ndarray, patch: int = PATCH) -> dict[str, float]:
    """Speckle grain FWHM in pixels, ``{"axial", "lateral"}``, of ``(N, H, W)`` images."""
    ac = autocorrelation(images, masks, patch)
    return {"axial": _fwhm(ac[:, patch]), "lateral": _fwhm(ac[patch, :])}


def real_reference() -> tuple[np.ndarray, np.ndarray, float]:
    """The pydicom apical 4CH cine: frames ``(T, H, W)`` float32 in [0, 1], its sector mask
    ``(H, W)`` and the sector depth in pixels."""
    frames, _ = read_cine(examples.get_path("ybr_color"))
    sector = cine_sector(frames)
    return frames.astype(np.float32) / 255, sector, sector_depth(sector)


def phantom_at_depth(
    depth_px: float, n_patients: int = 8, seed: int = 0, size: int = 256
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Phantom 4CH images made at ``size`` and resampled to a sector depth of ``depth_px``
    pixels: images ``(N, S', S')`` float32, sector masks ``(N, S', S')`` bool with
    ``S' = depth_px / 0.95``, and each image's quality class."""
    data = make_phantom(n_patients, size, seed)
    four = (data.meta["view"] == "4CH").to_numpy()
    new = int(round(depth_px / SECTOR_DEPTH))
    images = np.stack([resize_image(im, new) for im in data.images[four]])
    sector = resize_labels(phantom_sector(size).astype(np.uint8), new).astype(bool)
    return images, np.broadcast_to(sector, images.shape), list(data.meta["quality"][four])


def compare(n_patients: int = 8, seed: int = 0, size: int = 256) -> dict:
    """Histogram and grain statistics of the real cine and of phantom 4CH images."""
    frames, real_mask, depth = real_reference()
    real_masks = np.broadcast_to(real_mask, frames.shape)
    ph_images, ph_masks, _ = phantom_at_depth(depth, n_patients, seed, size)
    out = {"real_sector_depth_px": depth, "phantom_size": size, "n_phantom_4ch": len(ph_images)}
    for name, imgs, masks in (("real", frames, real_masks), ("phantom", ph_images, ph_masks)):
        grain = grain_size(imgs, masks)
        out[name] = {
            "intensity": intensity_stats(imgs, masks),
            "grain_px": grain,
            "grain_depth": {k: v / depth for k, v in grain.items()},
        }
    out["grain_ratio"] = {
        k: out["phantom"]["grain_px"][k] / out["real"]["grain_px"][k] for k in ("axial", "lateral")
    }
    return out


def _crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` outside ``mask`` set to 0 and cropped to the mask's bounding box."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (image * mask)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def figure(path: str, n_patients: int = 8, seed: int = 0, size: int = 256) -> None:
    """Side-by-side real frame and phantom 4CH image, histograms and autocorrelations (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames, real_mask, depth = real_reference()
    ph_images, ph_masks, quality = phantom_at_depth(depth, n_patients, seed, size)
    shown = quality.index("Good") if "Good" in quality else 0
    fig, ax = plt.subplots(1, 4, figsize=(16, 4.2))
    ax[0].imshow(_crop(frames[0], real_mask), cmap="gray", vmin=0, vmax=1)
    ax[0].set_title("real apical 4CH (pydicom ybr_color, frame 0)", fontsize=9)
    ax[1].imshow(_crop(ph_images[shown], ph_masks[shown]), cmap="gray", vmin=0, vmax=1)
    ax[1].set_title(f"phantom 4CH, {quality[shown]} (made at {size} px, same depth)", fontsize=9)
    for a in ax[:2]:
        a.axis("off")
    bins = np.linspace(0, 1, 65)
    ax[2].hist(frames[:, real_mask].ravel(), bins, density=True, histtype="step", label="real")
    ax[2].hist(ph_images[ph_masks].ravel(), bins, density=True, histtype="step", label="phantom")
    ax[2].set_yscale("log")
    ax[2].set_xlabel("intensity")
    ax[2].set_title("in-sector histogram", fontsize=9)
    ax[2].legend()
    lags = np.arange(-PATCH, PATCH)
    for name, imgs, masks in (
        ("real", frames, np.broadcast_to(real_mask, frames.shape)),
        ("phantom", ph_images, ph_masks),
    ):
        ac = autocorrelation(imgs, masks)
        ax[3].plot(lags, ac[:, PATCH], label=f"{name} axial")
        ax[3].plot(lags, ac[PATCH, :], "--", label=f"{name} lateral")
    ax[3].axhline(0.5, color="gray", lw=0.5)
    ax[3].set_xlim(-12, 12)
    ax[3].set_xlabel("lag (pixels, equal sector depth)")
    ax[3].set_title("normalised autocorrelation", fontsize=9)
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def gallery(path: str, seed: int = 0, size: int = 256) -> None:
    """Phantom images with label contours (PNG): top, one patient's 2CH/4CH x ED/ES; bottom,
    a 4CH image of each quality class and one at 64 px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = make_phantom(12, size, seed)
    meta = data.meta
    good = meta.index[(meta["quality"] == "Good") & (meta["view"] == "2CH")][0]
    picks = [(data, i) for i in range(good, good + 4)]
    for quality in ("Good", "Medium", "Poor"):
        four = (meta["quality"] == quality) & (meta["view"] == "4CH") & (meta["phase"] == "ED")
        picks.append((data, int(meta.index[four][0])))
    small = make_phantom(12, 64, seed)
    picks.append((small, picks[-3][1]))
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.6))
    for a, (d, i) in zip(axes.ravel(), picks):
        row = d.meta.iloc[i]
        a.imshow(d.images[i], cmap="gray", vmin=0, vmax=1)
        a.contour(d.masks[i], levels=[0.5, 1.5, 2.5], colors=["c", "y", "m"], linewidths=0.7)
        a.set_title(
            f"{row['view']} {row['phase']}, {row['sex']} {row['age']} y, EF {row['ef']:.0f} %, "
            f"{row['quality']} ({d.images.shape[-1]} px)",
            fontsize=8,
        )
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8, help="phantom patients (4CH ED+ES)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="phantom resolution")
    parser.add_argument("--figure", help="also write the side-by-side PNG here")
    parser.add_argument("--gallery", help="also write a PNG of phantom images with contours")
    args = parser.parse_args(argv)
    print(json.dumps(compare(args.patients, args.seed, args.size), indent=2))
    if args.figure:
        figure(args.figure, args.patients, args.seed, args.size)
    if args.gallery:
        gallery(args.gallery, args.seed, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
