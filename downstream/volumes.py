"""LV volumes and ejection fraction from apical label maps: Simpson's biplane method of discs.

CAMUS's clinical indices (Leclerc et al., 2019): the end-diastolic and end-systolic LV
volumes (EDV, ESV) and the ejection fraction EF = (EDV - ESV) / EDV, from the LV cavity
(label 1) of a patient's 2CH and 4CH images at ED and ES. Per image, the long axis runs from
the mitral base (the centre of the cavity's border with the left atrium, label 3) to the apex
(the cavity point farthest from it); the cavity is cut into ``N_DISCS`` discs perpendicular
to it, each disc's diameter being the length of the chord through the cavity at the disc's
centre. The biplane volume is ``pi / 4 * sum(a_i * b_i) * L / N_DISCS`` with the 2CH and 4CH
diameters ``a_i, b_i`` and the longer of the two axis lengths ``L`` (the ASE rule).

Everything is measured in mm from each image's own pixel spacing, so CAMUS's anisotropic
pixels are handled; volumes are in mL. The reference indices come from the reference label
maps by the same method, so their difference measures the segmentation, not the method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

N_DISCS = 20
LV, LA = 1, 3
VIEWS, PHASES = ("2CH", "4CH"), ("ED", "ES")


def long_axis(labels: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The base and apex ``(2,)`` (row, col in mm) of the LV cavity of one label map
    ``(H, W)`` with ``spacing`` ``(2,)`` in mm; None without a cavity.

    The base is the centre of the cavity pixels that touch the atrium; a cavity that touches
    none (a broken prediction) takes the centre of its deepest row, where the mitral plane of
    an apical view lies.
    """
    lv = labels == LV
    if not lv.any():
        return None
    rows, cols = np.nonzero(lv)
    points = np.stack([rows, cols], axis=1) * spacing
    interface = lv & ndi.binary_dilation(labels == LA)
    if interface.any():
        base = (np.stack(np.nonzero(interface), axis=1) * spacing).mean(axis=0)
    else:
        base = points[rows == rows.max()].mean(axis=0)
    apex = points[np.argmax(np.linalg.norm(points - base, axis=1))]
    return base, apex


def disc_diameters(
    labels: np.ndarray, spacing: np.ndarray, n_discs: int = N_DISCS
) -> tuple[float, np.ndarray]:
    """The long-axis length (mm) and the ``(n_discs,)`` disc diameters (mm) of the LV cavity
    of one label map ``(H, W)``; ``(0, zeros)`` without a cavity.

    A disc's diameter is the chord through the cavity, perpendicular to the axis at the disc's
    centre, sampled every quarter of the finer pixel spacing (nearest pixel).
    """
    axis = long_axis(labels, spacing)
    if axis is None:
        return 0.0, np.zeros(n_discs)
    base, apex = axis
    length = float(np.linalg.norm(apex - base))
    if length == 0:
        return 0.0, np.zeros(n_discs)
    along = (apex - base) / length
    across = np.array([-along[1], along[0]])
    step = float(spacing.min()) / 4
    reach = float(np.hypot(*(np.array(labels.shape) * spacing)))
    offsets = np.arange(-reach, reach, step)  # (S,)
    centres = base + np.outer((np.arange(n_discs) + 0.5) * length / n_discs, along)  # (n, 2)
    samples = centres[:, None, :] + offsets[None, :, None] * across  # (n, S, 2) mm
    index = np.rint(samples / spacing).astype(int)
    valid = ((index >= 0) & (index < np.array(labels.shape))).all(axis=-1)
    index = np.where(valid[..., None], index, 0)
    inside = valid & (labels[index[..., 0], index[..., 1]] == LV)
    return length, inside.sum(axis=1) * step


def biplane_volume(two: tuple[float, np.ndarray], four: tuple[float, np.ndarray]) -> float:
    """Simpson's biplane volume in mL from the 2CH and 4CH ``(length, diameters)``."""
    length = max(two[0], four[0])
    return float(np.pi / 4 * np.sum(two[1] * four[1]) * length / len(two[1]) / 1000)


def lv_indices(labels: np.ndarray, meta: pd.DataFrame, spacing: np.ndarray) -> pd.DataFrame:
    """EDV and ESV (mL) and EF (%) per patient from label maps ``(N, H, W)``, their ``meta``
    rows (patient, view, phase) and ``spacing`` ``(N, 2)`` in mm.

    Only patients with all four images (2CH and 4CH at ED and ES) are measured. A patient
    whose ED volume is 0 (no cavity found) gets EF 0; EF is not clipped otherwise (an ES
    cavity larger than the ED one gives a negative EF, as the formula does). Columns:
    patient, edv_ml, esv_ml, ef.
    """
    where = {
        (str(p), v, ph): i
        for i, (p, v, ph) in enumerate(meta[["patient", "view", "phase"]].itertuples(index=False))
    }
    rows = []
    for patient in sorted({key[0] for key in where}):
        keys = [(patient, v, ph) for ph in PHASES for v in VIEWS]
        if not all(k in where for k in keys):
            continue
        volume = {}
        for phase in PHASES:
            index = [where[(patient, view, phase)] for view in VIEWS]
            two, four = (disc_diameters(labels[i], spacing[i]) for i in index)
            volume[phase] = biplane_volume(two, four)
        ed, es = volume["ED"], volume["ES"]
        ef = 100 * (ed - es) / ed if ed > 0 else 0.0
        rows.append({"patient": patient, "edv_ml": ed, "esv_ml": es, "ef": ef})
    return pd.DataFrame(rows, columns=["patient", "edv_ml", "esv_ml", "ef"])


def agreement(pred: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Predicted and reference indices (from :func:`lv_indices`) side by side for their common
    patients, one row each: patient, edv_ml_pred, edv_ml_ref, esv_ml_pred, esv_ml_ref,
    ef_pred, ef_ref (the cell's ``per_patient.csv``, and a Bland-Altman plot's input)."""
    both = pred.merge(ref, on="patient", suffixes=("_pred", "_ref"))
    cols = [f"{i}_{side}" for i in ("edv_ml", "esv_ml", "ef") for side in ("pred", "ref")]
    return both[["patient", *cols]]


def index_errors(per_patient: pd.DataFrame) -> dict[str, float]:
    """Agreement over the rows of :func:`agreement`: ``ef_mae`` and ``ef_bias`` (EF points,
    predicted minus reference), ``ef_loa`` (the half-width of Bland and Altman's 95 % limits
    of agreement, 1.96 times the standard deviation of the differences), ``ef_corr``
    (Pearson), ``edv_mae_ml`` and ``esv_mae_ml``. ``ef_loa`` and ``ef_corr`` are NaN below 3
    patients, ``ef_corr`` also without spread. Empty when no patient has all four images."""
    if per_patient.empty:
        return {}
    pred, ref = per_patient["ef_pred"], per_patient["ef_ref"]
    diff = pred - ref
    enough = len(per_patient) >= 3
    spread = pred.std() > 0 and ref.std() > 0
    return {
        "ef_mae": float(diff.abs().mean()),
        "ef_bias": float(diff.mean()),
        "ef_loa": float(1.96 * diff.std(ddof=1)) if enough else float("nan"),
        "ef_corr": float(pred.corr(ref)) if enough and spread else float("nan"),
        "edv_mae_ml": float((per_patient["edv_ml_pred"] - per_patient["edv_ml_ref"]).abs().mean()),
        "esv_mae_ml": float((per_patient["esv_ml_pred"] - per_patient["esv_ml_ref"]).abs().mean()),
    }
