"""Appearance statistics: the grain-size estimator on a known field, and phantom vs real."""

import numpy as np
from scipy import ndimage as ndi

from benchmark.data.appearance import compare, grain_size, intensity_stats
from benchmark.data.sector import convex_fill, image_sector


def test_grain_size_of_filtered_noise():
    # White noise smoothed by a Gaussian of sigma s has a Gaussian autocorrelation of sigma
    # s * sqrt(2): FWHM = 2.355 * sqrt(2) * s = 3.33 and 6.66 px here. Removing each patch's
    # mean shortens it slightly (about 7 % at 16 px patches).
    rng = np.random.default_rng(0)
    field = ndi.gaussian_filter(rng.standard_normal((4, 128, 128)), (0, 1.0, 2.0))
    grain = grain_size(field, np.ones(field.shape, bool))
    assert 0.88 * 3.33 < grain["axial"] < 3.33
    assert 0.88 * 6.66 < grain["lateral"] < 6.66


def test_intensity_stats_only_inside_mask():
    images = np.zeros((1, 4, 4))
    images[0, :2] = 1.0
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :2, :2] = True
    stats = intensity_stats(images, masks)
    assert stats["mean"] == 1.0 and stats["std"] == 0.0 and stats["p5"] == 1.0


def test_sector_estimate_stays_inside_the_fan():
    image = np.zeros((50, 50))
    rows, cols = np.mgrid[:50, :50]
    fan = (np.hypot(rows, cols - 25) < 45) & (np.abs(np.arctan2(cols - 25, rows)) < 0.6)
    image[fan] = np.random.default_rng(0).random(fan.sum()) > 0.3  # dark speckle inside
    est = image_sector(image)
    assert not (est & ~fan).any() and est.sum() > 0.9 * fan.sum()
    assert convex_fill(np.zeros((5, 5), bool)).sum() == 0


def test_phantom_grain_matches_real_cine_within_30_percent():
    result = compare(n_patients=4, seed=0, size=256)
    for axis in ("axial", "lateral"):
        assert 0.7 < result["grain_ratio"][axis] < 1.3
    real, ph = result["real"]["intensity"], result["phantom"]["intensity"]
    assert abs(ph["mean"] - real["mean"]) < 0.05 and abs(ph["p95"] - real["p95"]) < 0.1
