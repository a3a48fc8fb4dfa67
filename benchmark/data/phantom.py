"""A synthetic apical echo phantom: CAMUS-like 2CH/4CH images at ED and ES with label maps.

Anatomy. Each patient has an LV cavity, LV myocardium and left atrium (labels 1, 2, 3) and, in
4CH, an unlabelled right ventricle and atrium. Chambers are bullet or egg shapes along tilted
axes, with a random smooth width deformation per side. Sex and age set the heart size, wall
thickness, atrial size and myocardial brightness; the ejection fraction (30-75 %) shrinks the LV
from ED to ES (mostly across, partly along the axis, wall thickening) and fills the atrium.

Imaging. Echoes are formed on a polar (depth x beam angle) grid: complex random scatterers whose
power is the tissue echogenicity, attenuated with depth, are convolved with a separable Gaussian
point-spread function at baseband (I/Q), envelope-detected (magnitude), log-compressed to a
50 dB dynamic range and scan-converted into the sector. A continuous per-view image-quality
latent (binned to Good/Medium/Poor) widens the PSF and raises electronic noise, near-field haze,
wall dropout and attenuation.

Everything is deterministic per ``(seed, patient index)``: patient ``i`` looks the same whatever
``n_patients`` or ``first_patient`` were, so fresh never-seen patients come from a larger
``first_patient``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy import sparse

from benchmark.data.records import EchoData

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
QUALITIES = ("Good", "Medium", "Poor")

# Sector geometry in units of image height: the probe (sector apex) sits at the top centre.
APEX_Y = 0.02
SECTOR_DEPTH = 0.95
HALF_ANGLE = np.deg2rad(40.0)
# Nominal physical scale: the image height in mm. At 180 mm the ED LV cavity is ~72 mm long
# and ~47 mm wide (adult sizes), the sector 17 cm deep, and Simpson's biplane volumes of the
# label maps agree with the nominal lv_edv (docs/DATA.md).
IMAGE_HEIGHT_MM = 180.0

# Tissue classes; masks keep only the CAMUS labels (LV 1, MYO 2, LA 3).
_BG, _LV, _MYO, _LA, _RV, _RA, _WALL, _PERI = range(8)
_CLASS_TO_LABEL = np.array([0, 1, 2, 3, 0, 0, 0, 0], dtype=np.uint8)
# Mean backscatter power per class (linear); blood is ~35 dB below myocardium.
_ECHO = np.array([0.04, 0.0012, 0.35, 0.0012, 0.0012, 0.0012, 0.30, 1.2], dtype=np.float32)

# Point-spread function, as Gaussian sigmas in units of sector depth (axial) and radians
# (lateral); tuned so the speckle grain matches the pydicom apical 4CH cine (docs/DATA.md).
PSF_AXIAL = 0.0105
PSF_LATERAL = 0.025
DYNAMIC_RANGE_DB = 50.0
GAIN_DB = -32.0  # display gain: matches the in-sector histogram of the reference cine
# Image quality latent thresholds: Good | Medium | Poor (about 40/37/23 % of views).
QUALITY_CUTS = (-0.35, 0.9)
_PROFILE_BINS = 128  # samples of a chamber's half-width profile along its axis


def _degradation(latent: float) -> dict:
    """PSF widening, electronic noise floor, near-field haze, dropout strength and net
    attenuation (power per sector depth left after time-gain compensation) for a quality
    latent; they grow smoothly so neighbouring quality classes overlap."""
    t = float(np.clip((latent + 1.6) / 3.6, 0.0, 1.0))  # 0 = best window, 1 = worst
    return dict(
        blur=1.0 + 0.5 * t,
        noise=4e-4 * 15.0**t,
        haze=0.016 * t**2,
        dropout=float(np.clip(1.3 * t - 0.25, 0.0, 0.95)),
        atten=0.5 + 1.4 * t,
    )


# ----------------------------------------------------------------------------- patients
@dataclass(frozen=True)
class _Patient:
    """Per-patient anatomy and acquisition parameters (lengths in units of image height)."""

    sex: str
    age: int
    ef: float  # fraction in [0.30, 0.75]
    latent: dict  # view -> continuous image-quality latent (higher = worse)
    scale: float  # overall heart size
    wall: float  # LV myocardial thickness at ED
    la_scale: float
    frames: dict  # view -> (ED frame, ES frame, number of frames)
    frame_rate: float
    edv: float  # ml, for the CAMUS cfg
    views: dict  # view -> per-view geometry

    def quality(self, view: str) -> str:
        return QUALITIES[int(np.searchsorted(QUALITY_CUTS, self.latent[view]))]


def _deformation(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A smooth random relative width change along a chamber axis, ``(2, _PROFILE_BINS)``.

    Row 0 is the left side, row 1 the right; three low sine harmonics keep it smooth.
    """
    s = np.linspace(0.0, 1.0, _PROFILE_BINS)
    k = np.arange(1, 4)
    coef = rng.normal(0, 1, (2, 3)) * amplitude / k
    phase = rng.uniform(0, 2 * np.pi, (2, 3))
    return np.einsum("ij,ijn->in", coef, np.sin(k[None, :, None] * np.pi * s + phase[..., None]))


def _sample_patient(seed: int, index: int) -> _Patient:
    rng = np.random.default_rng([seed, index, 0])
    sex = "M" if rng.random() < 0.6 else "F"
    age = int(np.clip(round(rng.normal(64, 14)), 18, 95))
    ef = float(30 + 45 * rng.beta(2.4, 1.6)) / 100
    window = rng.normal()  # patient-level acoustic window: both views share most of it
    latent = {view: float(window + 0.6 * rng.normal()) for view in VIEWS}
    dilation = 0.15 * max(0.0, (0.50 - ef) / 0.20)  # low-EF hearts are dilated
    scale = (1.04 if sex == "M" else 0.95) * (1 + dilation) * rng.normal(1, 0.05)
    wall = 0.052 * (1 + 0.005 * (age - 60)) * (1.08 if sex == "M" else 1.0) * rng.normal(1, 0.08)
    la_scale = (1 + 0.005 * (age - 60)) * rng.normal(1, 0.07)
    frames = {}
    for view in VIEWS:
        nb = int(rng.integers(14, 24))
        frames[view] = (1, nb, nb) if rng.random() < 0.5 else (nb, 1, nb)
    views = {
        view: dict(
            tilt=np.deg2rad(rng.normal(9.0 if view == "4CH" else 2.0, 4.0)),
            shift=rng.normal(0.0, 0.015),
            apex_depth=rng.normal(0.13, 0.012),
            lv=_deformation(rng, 0.07),
            la=_deformation(rng, 0.08),
            la_tilt=np.deg2rad(rng.normal(0, 7)),
            rv=_deformation(rng, 0.08),
            rv_tilt=np.deg2rad(rng.normal(-20, 5)),
            taper=rng.uniform(0.05, 0.25),
            gain_db=rng.normal(0, 1.5),
        )
        for view in VIEWS
    }
    return _Patient(
        sex=sex,
        age=age,
        ef=ef,
        latent=latent,
        scale=float(scale),
        wall=float(wall),
        la_scale=float(la_scale),
        frames=frames,
        frame_rate=float(rng.choice([25.0, 30.0, 40.0, 50.0])),
        edv=float(110.0 * scale**3 * rng.normal(1, 0.1)),
        views=views,
    )


# ----------------------------------------------------------------------------- grids
@dataclass(frozen=True)
class _Grids:
    """Precomputed coordinates for one output size S and its polar grid NR x NA."""

    xs: np.ndarray  # (S,) lateral position of each column, 0 at the centre
    ys: np.ndarray  # (S,) depth of each row from the top edge
    sector: np.ndarray  # (S, S) bool field of view
    px: np.ndarray  # (NR * NA,) lateral position of each polar sample
    py: np.ndarray  # (NR * NA,) depth of each polar sample
    rho: np.ndarray  # (NR, 1) depth of each polar row in units of sector depth
    theta: np.ndarray  # (NA,) beam angles
    scan: sparse.csr_matrix  # (K, NR * NA) bilinear scan conversion for the K in-sector pixels
    sector_flat: np.ndarray  # (K,) flat Cartesian indices of in-sector pixels
    upsample_r: np.ndarray  # (NR, 8) linear interpolation from an 8-knot coarse grid
    upsample_a: np.ndarray  # (NA, 8)


def _interp_matrix(n: int, knots: int) -> np.ndarray:
    """``(n, knots)`` matrix that linearly interpolates ``knots`` values onto ``n`` samples."""
    pos = np.linspace(0, knots - 1, n)
    lo = np.clip(np.floor(pos).astype(int), 0, knots - 2)
    m = np.zeros((n, knots), dtype=np.float32)
    m[np.arange(n), lo] = 1 - (pos - lo)
    m[np.arange(n), lo + 1] = pos - lo
    return m


@lru_cache(maxsize=8)
def _grids(size: int) -> _Grids:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(coords, coords - 0.5, indexing="ij")
    dy = y - APEX_Y
    rho_c = np.sqrt(x**2 + dy**2)
    theta_c = np.arctan2(x, dy)
    sector = (rho_c <= SECTOR_DEPTH) & (np.abs(theta_c) <= HALF_ANGLE) & (dy > 0)

    # Polar samples: at least 2.5 per PSF FWHM at 256 px and no more, since scatterer
    # generation and filtering dominate the cost; small images use one sample per pixel.
    n_r, n_a = min(size, 112), min(size, 80)
    rho = (np.arange(n_r, dtype=np.float32) + 0.5) / n_r
    theta = -HALF_ANGLE + (np.arange(n_a, dtype=np.float32) + 0.5) / n_a * 2 * HALF_ANGLE
    px = rho[:, None] * SECTOR_DEPTH * np.sin(theta)[None, :]
    py = APEX_Y + rho[:, None] * SECTOR_DEPTH * np.cos(theta)[None, :]

    sector_flat = np.flatnonzero(sector)
    fi = np.clip(rho_c.ravel()[sector_flat] / SECTOR_DEPTH * n_r - 0.5, 0, n_r - 1.001)
    fj = (theta_c.ravel()[sector_flat] + HALF_ANGLE) / (2 * HALF_ANGLE) * n_a - 0.5
    fj = np.clip(fj, 0, n_a - 1.001)
    i0, j0 = np.floor(fi).astype(np.int64), np.floor(fj).astype(np.int64)
    wi, wj = (fi - i0).astype(np.float32), (fj - j0).astype(np.float32)
    index = np.stack(
        [i0 * n_a + j0, i0 * n_a + j0 + 1, (i0 + 1) * n_a + j0, (i0 + 1) * n_a + j0 + 1]
    )
    weight = np.stack([(1 - wi) * (1 - wj), (1 - wi) * wj, wi * (1 - wj), wi * wj])
    k = len(sector_flat)
    scan = sparse.csr_matrix(
        (weight.T.ravel().astype(np.float32), index.T.ravel(), np.arange(0, 4 * k + 1, 4)),
        shape=(k, n_r * n_a),
    )
    return _Grids(
        xs=coords - 0.5,
        ys=coords,
        sector=sector,
        px=px.ravel().astype(np.float32),
        py=py.ravel().astype(np.float32),
        rho=rho[:, None],
        theta=theta,
        scan=scan,
        sector_flat=sector_flat,
        upsample_r=_interp_matrix(n_r, 8),
        upsample_a=_interp_matrix(n_a, 8),
    )


def phantom_sector(size: int) -> np.ndarray:
    """``(size, size)`` bool: the phantom's field of view."""
    return _grids(size).sector.copy()


# ----------------------------------------------------------------------------- anatomy
@dataclass(frozen=True)
class _Chamber:
    """Nested shapes sharing one axis from ``tip`` (x, y), pointing down, rotated by ``angle``
    towards the image right. Each layer ``(class, offset, length, half_width)`` starts
    ``offset`` before the tip, is ``length`` long and has half widths ``(2, _PROFILE_BINS)``
    (left/right side) from its start (s=0) to its end (s=1). Layers are painted in order."""

    tip: np.ndarray
    angle: float
    layers: list


def _unit(angle: float) -> np.ndarray:
    """Unit vector pointing down the image, rotated by ``angle`` towards the right."""
    return np.array([np.sin(angle), np.cos(angle)])


def _ventricle_profile(cap: float, taper: float, half: float, deform: np.ndarray) -> np.ndarray:
    """Bullet-shaped half widths: a rounded apical cap, then a slight taper to the base."""
    s = np.linspace(0.0, 1.0, _PROFILE_BINS)
    # Blunter than a cone, sharper than an ellipse, like an apical LV.
    w = np.where(
        s < cap,
        np.clip(1 - ((cap - s) / cap) ** 2, 0, 1) ** 0.65,
        1 - taper * ((s - cap) / (1 - cap)) ** 2,
    )
    return half * w[None, :] * (1 + deform)


def _atrium_profile(half: float, deform: np.ndarray) -> np.ndarray:
    """Egg-shaped half widths from the valve plane (s=0, narrower) to the atrial roof (s=1)."""
    s = np.linspace(0.0, 1.0, _PROFILE_BINS)
    w = np.sqrt(np.clip(1 - ((s - 0.42) / 0.58) ** 2, 0, 1))
    return half * w[None, :] * (1 + deform)


def _anatomy(p: _Patient, view: str, phase: str) -> tuple[list[_Chamber], list[np.ndarray]]:
    """Chambers in painting order (back to front) and the two mitral annulus points."""
    g = p.views[view]
    es = phase == "ES"
    # Volume shrinks by (1 - EF): mostly across the axis, partly by the base moving to the apex.
    len_f = (1 - p.ef) ** 0.2 if es else 1.0
    wid_f = (1 - p.ef) ** 0.4 if es else 1.0
    wall = p.wall * ((1 + 0.45 * p.ef) if es else 1.0)  # the myocardium thickens in systole
    la_f = p.la_scale * ((1 + 0.35 * p.ef) if es else 1.0)  # the atrium fills in systole

    length = 0.42 * p.scale * len_f
    half = 0.14 * p.scale * wid_f * (0.94 if view == "2CH" else 1.0)
    tilt = g["tilt"]
    axis, left = _unit(tilt), _unit(tilt - np.pi / 2)
    apex = np.array([g["shift"], APEX_Y + g["apex_depth"] + wall])
    base = apex + length * axis
    cap, taper = 0.6, g["taper"]

    def lv_layer(cls: int, offset: float, taper_w: float) -> tuple:
        total = length + offset
        prof = _ventricle_profile((cap * length + offset) / total, taper_w, half + offset, g["lv"])
        return (cls, offset, total, prof)

    peri = wall + 0.018
    chambers = [_Chamber(apex, tilt, [lv_layer(_PERI, peri, 0.1)])]
    if view == "4CH":
        # Right ventricle left of the septum, shorter than the LV; right atrium below it.
        rv_len = 0.78 * length * ((1 - 0.15 * p.ef) if es else 1.0)
        rv_half = 0.62 * half * ((1 - 0.3 * p.ef) if es else 1.0) / wid_f**0.5
        rv_base = base + left * (half + wall + 0.75 * rv_half) - axis * 0.03
        rv_tilt = tilt + g["rv_tilt"]
        rw, pw = 0.012, 0.027  # free wall, and pericardium beyond it

        def rv_layer(cls: int, offset: float) -> tuple:
            total = rv_len + offset
            prof = _ventricle_profile(
                (0.5 * rv_len + offset) / total, 0.1, rv_half + offset, g["rv"]
            )
            return (cls, offset, total, prof)

        rv_tip = rv_base - rv_len * _unit(rv_tilt)
        chambers.append(
            _Chamber(
                rv_tip, rv_tilt, [rv_layer(_PERI, pw), rv_layer(_WALL, rw), rv_layer(_RV, 0.0)]
            )
        )
        ra_len = 0.2 * la_f * p.scale
        ra_hw = _atrium_profile(0.10 * la_f * p.scale, g["la"][::-1])
        ra_layers = [(_WALL, 0.01, ra_len + 0.02, ra_hw + 0.01), (_RA, 0.0, ra_len, ra_hw)]
        chambers.append(_Chamber(rv_base, rv_tilt - 0.1, ra_layers))

    la_len = 0.21 * la_f * p.scale
    la_hw = _atrium_profile(0.115 * la_f * p.scale, g["la"])
    la_layers = [(_WALL, 0.01, la_len + 0.02, la_hw + 0.01), (_LA, 0.0, la_len, la_hw)]
    chambers.append(_Chamber(base, tilt + g["la_tilt"], la_layers))
    cavity = lv_layer(_LV, 0.0, taper)
    chambers.append(_Chamber(apex, tilt, [lv_layer(_MYO, wall, taper * 0.6), cavity]))
    prof = cavity[3]
    annulus = [base - left * (prof[1, -1] + 0.4 * wall), base + left * (prof[0, -1] + 0.4 * wall)]
    return chambers, annulus


def _inside(along: np.ndarray, across: np.ndarray, side: np.ndarray, layer: tuple) -> np.ndarray:
    """Bool: points at ``along`` the axis and ``across`` (absolute) lie inside ``layer``;
    ``side`` is 0 left / ``_PROFILE_BINS + 2`` right, offsetting into the profile table."""
    _, offset, length, half_width = layer
    b = _PROFILE_BINS
    # Profile bin along the axis; bins 0 and B+1 are padding with negative width (outside).
    k = np.float32((b - 1) / length)
    pos = along * k + np.float32(offset * k + 1.5)
    np.clip(pos, 0, b + 1, out=pos)
    idx = pos.astype(np.int32)
    idx += side
    table = np.full((2, b + 2), -1.0, dtype=np.float32)
    table[:, 1:-1] = half_width
    return across <= table.ravel()[idx]


def _axis_coords(dx: np.ndarray, dy: np.ndarray, angle: float) -> tuple:
    """Along-axis position, absolute across-axis distance and side index for offsets from a tip."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    along = dx * s + dy * c
    across = dx * c - dy * s
    side = (across > 0) * np.int32(_PROFILE_BINS + 2)
    np.abs(across, out=across)
    return along, across, side


def _corners(tip: np.ndarray, angle: float, layers: list) -> np.ndarray:
    """``(4 * len(layers), 2)`` corners (x, y) of the layers' boxes along their axis."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = [], []
    for _, offset, length, half_width in layers:
        h = float(half_width.max())
        u += [-offset, -offset, length - offset, length - offset]
        v += [-h, h, -h, h]
    u, v = np.array(u), np.array(v)
    return np.stack([tip[0] + u * s + v * c, tip[1] + u * c - v * s], 1)


def _paint_labels(chambers: list[_Chamber], grids: _Grids) -> np.ndarray:
    """``(S, S)`` uint8 label map: the labelled layers painted in order, inside the sector.

    Only each chamber's bounding box is evaluated, which keeps full-resolution masks cheap.
    """
    size = grids.sector.shape[0]
    labels = np.zeros((size, size), dtype=np.uint8)
    for ch in chambers:
        layers = [layer for layer in ch.layers if _CLASS_TO_LABEL[layer[0]]]
        if not layers:
            continue
        corners = _corners(ch.tip, ch.angle, layers)
        c0 = min(max(int((corners[:, 0].min() + 0.5) * size - 1), 0), size)
        c1 = min(max(int((corners[:, 0].max() + 0.5) * size + 2), 0), size)
        r0 = min(max(int(corners[:, 1].min() * size - 1), 0), size)
        r1 = min(max(int(corners[:, 1].max() * size + 2), 0), size)
        if c1 <= c0 or r1 <= r0:
            continue
        dx = grids.xs[None, c0:c1] - np.float32(ch.tip[0])
        dy = grids.ys[r0:r1, None] - np.float32(ch.tip[1])
        along, across, side = _axis_coords(dx, dy, ch.angle)
        box = labels[r0:r1, c0:c1]
        for layer in layers:
            box[_inside(along, across, side, layer)] = _CLASS_TO_LABEL[layer[0]]
    labels[~grids.sector] = 0
    return labels


def _paint_polar(chambers: list[_Chamber], grids: _Grids) -> np.ndarray:
    """``(NR, NA)`` tissue class of every polar sample, all layers painted in order.

    Each chamber is evaluated only on the polar rows and beams its bounding box can reach.
    """
    n_r, n_a = grids.upsample_r.shape[0], grids.upsample_a.shape[0]
    classes = np.full((n_r, n_a), _BG, dtype=np.uint8)
    px, py = grids.px.reshape(n_r, n_a), grids.py.reshape(n_r, n_a)
    for ch in chambers:
        corners = _corners(ch.tip, ch.angle, ch.layers)
        x0, x1 = corners[:, 0].min(), corners[:, 0].max()
        y0, y1 = corners[:, 1].min() - APEX_Y, corners[:, 1].max() - APEX_Y
        if y1 <= 0:
            continue
        # The box lies below the probe: its depth and angle ranges are set by its corners.
        near = np.hypot(max(x0, 0, -x1), max(y0, 0)) / SECTOR_DEPTH
        far = np.hypot(max(abs(x0), abs(x1)), y1) / SECTOR_DEPTH
        angles = np.arctan2(corners[:, 0], np.maximum(corners[:, 1] - APEX_Y, 1e-6))
        rows = np.flatnonzero((grids.rho[:, 0] >= near - 0.02) & (grids.rho[:, 0] <= far + 0.02))
        cols = np.flatnonzero(
            (grids.theta >= angles.min() - 0.02) & (grids.theta <= angles.max() + 0.02)
        )
        if rows.size == 0 or cols.size == 0:
            continue
        block = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        along, across, side = _axis_coords(
            px[block] - np.float32(ch.tip[0]), py[block] - np.float32(ch.tip[1]), ch.angle
        )
        target = classes[block]
        for layer in ch.layers:
            target[_inside(along, across, side, layer)] = layer[0]
    return classes


# ----------------------------------------------------------------------------- imaging
@lru_cache(maxsize=256)
def _kernel_power(sig_r: float, sig_a: float) -> float:
    """Sum of squared weights of the separable Gaussian PSF (its noise power gain)."""

    def one(sig: float) -> float:
        impulse = np.zeros(int(8 * sig) + 9)
        impulse[len(impulse) // 2] = 1
        return float((ndi.gaussian_filter1d(impulse, sig, truncate=3.0) ** 2).sum())

    return one(sig_r) * one(sig_a)


def _render(
    p: _Patient,
    view: str,
    chambers: list[_Chamber],
    annulus: list[np.ndarray],
    grids: _Grids,
    rng: np.random.Generator,
) -> np.ndarray:
    """B-mode image ``(S, S)`` float32 in [0, 1] on 8-bit levels."""
    size = grids.sector.shape[0]
    n_r, n_a = grids.upsample_r.shape[0], grids.upsample_a.shape[0]
    q = _degradation(p.latent[view])
    echo = _ECHO.copy()
    echo[_MYO] *= 1 + 0.006 * (p.age - 60)  # the myocardium brightens with age (fibrosis)
    power = echo[_paint_polar(chambers, grids)]

    # Smooth tissue texture: lognormal on a coarse 8 x 8 grid, linearly interpolated.
    coarse = np.exp(rng.normal(0, 0.45, (8, 8))).astype(np.float32)
    power *= grids.upsample_r @ coarse @ grids.upsample_a.T

    # Bright mitral annulus spots, evaluated only in a window around each point.
    sig = 0.012
    for ax, ay in annulus:
        r_c = np.hypot(ax, ay - APEX_Y) / SECTOR_DEPTH
        a_c = np.arctan2(ax, ay - APEX_Y)
        rows = np.flatnonzero(np.abs(grids.rho[:, 0] - r_c) < 4 * sig / SECTOR_DEPTH)
        cols = np.flatnonzero(np.abs(grids.theta - a_c) < 4 * sig / max(r_c * SECTOR_DEPTH, 0.05))
        if rows.size and cols.size:
            rho_m = grids.rho[rows] * SECTOR_DEPTH
            dx = rho_m * np.sin(grids.theta[cols])[None, :] - ax
            dy = APEX_Y + rho_m * np.cos(grids.theta[cols])[None, :] - ay
            spot = 1.5 * np.exp(-(dx**2 + dy**2) / (2 * sig**2))
            power[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] += spot

    # Wall dropout: beams roughly parallel to the walls lose echo over a depth band.
    if q["dropout"] > 0:
        for _ in range(int(rng.integers(1, 4))):
            centre = rng.uniform(-0.8, 0.8) * HALF_ANGLE
            dip = np.exp(-0.5 * ((grids.theta - centre) / rng.uniform(0.05, 0.12)) ** 2)
            band = np.exp(-0.5 * ((grids.rho - rng.uniform(0.3, 0.8)) / 0.15) ** 2)
            power *= 1 - q["dropout"] * 0.9 * dip[None, :] * band

    power *= np.exp(-q["atten"] * grids.rho)
    if q["haze"] > 0:  # near-field clutter fills the apical cavities
        haze = grids.upsample_r @ rng.uniform(0.3, 1.7, (8, 8)).astype(np.float32)
        power += q["haze"] * np.exp(-grids.rho / 0.3) * (haze @ grids.upsample_a.T)
    power += q["noise"]

    # Baseband I/Q scatterers, PSF convolution, envelope, log compression.
    iq = rng.standard_normal((2, n_r, n_a), dtype=np.float32)
    iq *= np.sqrt(power)[None]
    sig_r = PSF_AXIAL * q["blur"] * n_r
    sig_a = PSF_LATERAL * q["blur"] * n_a / (2 * HALF_ANGLE)
    iq = ndi.gaussian_filter1d(iq, sig_r, axis=1, truncate=3.0)
    iq = ndi.gaussian_filter1d(iq, sig_a, axis=2, truncate=3.0)
    env2 = iq[0] ** 2 + iq[1] ** 2
    env2 *= 1.0 / _kernel_power(round(sig_r, 3), round(sig_a, 3))  # mean env2 = power
    db = 10 * np.log10(env2 + 1e-12) + (GAIN_DB + float(p.views[view]["gain_db"]))
    polar = np.clip((db + DYNAMIC_RANGE_DB) * (1 / DYNAMIC_RANGE_DB), 0, 1).ravel()

    img = np.zeros(size * size, dtype=np.float32)
    values = grids.scan @ polar
    # 8-bit levels computed like a uint8 file read back (k / 255 in float32): exact round trip.
    img[grids.sector_flat] = np.rint(values * np.float32(255)) / np.float32(255)
    return img.reshape(size, size)


# ----------------------------------------------------------------------------- dataset
def patient_splits(n_patients: int, seed: int, first_patient: int) -> list[str]:
    """~70/10/20 train/val/test by patient; each split non-empty once there are 3 patients."""
    if n_patients < 3:
        return ["train"] * n_patients
    n_test = max(1, round(0.2 * n_patients))
    n_val = max(1, round(0.1 * n_patients))
    keys = [np.random.default_rng([seed, first_patient + i, 1]).random() for i in range(n_patients)]
    split = ["train"] * n_patients
    for rank, i in enumerate(np.argsort(keys, kind="stable")):
        if rank < n_test:
            split[i] = "test"
        elif rank < n_test + n_val:
            split[i] = "val"
    return split


def make_phantom(n_patients: int, size: int, seed: int, first_patient: int = 0) -> EchoData:
    """Simulate ``n_patients`` patients, 4 images each (2CH/4CH x ED/ES), patient-major.

    Returns an :class:`EchoData` with images ``(4 * n_patients, size, size)`` float32 in [0, 1]
    (8-bit levels) and masks of the same shape in ``{0..3}``. Patient ``first_patient + i`` is
    named ``patient{first_patient + i + 1:04d}`` and depends only on ``(seed, its index)``.
    Extra metadata columns mirror the CAMUS cfg keys (ED/ES frame, NbFrame, volumes, frame rate)
    and give the nominal isotropic pixel spacing (:data:`IMAGE_HEIGHT_MM` / ``size``).
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    grids = _grids(size)
    images = np.empty((4 * n_patients, size, size), dtype=np.float32)
    masks = np.empty((4 * n_patients, size, size), dtype=np.uint8)
    rows = []
    splits = patient_splits(n_patients, seed, first_patient)
    k = 0
    for i in range(n_patients):
        index = first_patient + i
        p = _sample_patient(seed, index)
        for vi, view in enumerate(VIEWS):
            for pi, phase in enumerate(PHASES):
                chambers, annulus = _anatomy(p, view, phase)
                rng = np.random.default_rng([seed, index, 2, vi, pi])
                images[k] = _render(p, view, chambers, annulus, grids, rng)
                masks[k] = _paint_labels(chambers, grids)
                ed, es, nb = p.frames[view]
                rows.append(
                    dict(
                        patient=f"patient{index + 1:04d}",
                        view=view,
                        phase=phase,
                        sex=p.sex,
                        age=p.age,
                        quality=p.quality(view),
                        ef=round(100 * p.ef, 1),
                        split=splits[i],
                        source="real",
                        label_source="phantom",
                        frame_ed=ed,
                        frame_es=es,
                        nb_frame=nb,
                        frame_rate=p.frame_rate,
                        lv_edv=round(p.edv, 1),
                        lv_esv=round(p.edv * (1 - p.ef), 1),
                        spacing_row_mm=IMAGE_HEIGHT_MM / size,
                        spacing_col_mm=IMAGE_HEIGHT_MM / size,
                    )
                )
                k += 1
    return EchoData(images=images, masks=masks, meta=pd.DataFrame(rows))
