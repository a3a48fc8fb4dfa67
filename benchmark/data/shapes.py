"""Geometric attributes of a structure's mask: shape word, size, position, component count.

Shape rule (deterministic; SB asked a VQA model instead, which is not available offline).
Take the convex hull of the mask's pixel squares and its minimum-area enclosing rectangle
(rotating calipers over the hull edges). With ``fill = hull area / rectangle area`` and
``aspect = long side / short side`` of that rectangle:

==================  =========================  ===================
fill                aspect < 1.3               aspect >= 1.3
==================  =========================  ===================
fill >= 0.88        ``square``                 ``rectangle``
0.64 <= fill < 0.88 ``circle``                 ``oval``
fill < 0.64         ``triangle``               ``triangle``
==================  =========================  ===================

Ideal shapes fill their rectangle by 1 (rectangle), pi/4 = 0.785 (ellipse) and 1/2
(triangle); the cut-offs are the midpoints. The hull makes the open U of the myocardium read as
the outline of the ventricle it wraps. An empty mask is ``"none"``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

SHAPES = ("oval", "circle", "triangle", "square", "rectangle")
FILL_RECTANGLE = 0.88
FILL_TRIANGLE = 0.64
ASPECT_ELONGATED = 1.3


def hull_geometry(mask: np.ndarray) -> tuple[float, float, float] | None:
    """``(hull area, rectangle long side, rectangle short side)`` of a ``(H, W)`` mask, in
    pixels, or None when empty. The rectangle is the minimum-area one around the hull."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    # Corners of every boundary pixel's square, so a single pixel is a unit square.
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], 1) for dr in (0, 1) for dc in (0, 1)]
    ).astype(float)
    try:
        hull = ConvexHull(corners)
    except QhullError:  # degenerate (a line of pixels) cannot happen with squares, but be safe
        return float(rows.size), float(rows.size), 1.0
    pts = corners[hull.vertices]
    best = None
    for i in range(len(pts)):
        edge = pts[(i + 1) % len(pts)] - pts[i]
        edge /= np.linalg.norm(edge)
        normal = np.array([-edge[1], edge[0]])
        a, b = pts @ edge, pts @ normal
        w, h = a.max() - a.min(), b.max() - b.min()
        if best is None or w * h < best[0] * best[1]:
            best = (w, h)
    return float(hull.volume), max(best), min(best)


SHAPE_WORDS = ("rectangle", "square", "oval", "circle", "triangle")  # what shape_word names


def shape_word(mask: np.ndarray) -> str:
    """SB's shape vocabulary (:data:`SHAPE_WORDS`) for a ``(H, W)`` bool mask by the
    module's rule (or ``"none"``)."""
    geometry = hull_geometry(mask)
    if geometry is None:
        return "none"
    area, long_side, short_side = geometry
    fill = area / (long_side * short_side)
    elongated = long_side / short_side >= ASPECT_ELONGATED
    if fill >= FILL_RECTANGLE:
        return "rectangle" if elongated else "square"
    if fill >= FILL_TRIANGLE:
        return "oval" if elongated else "circle"
    return "triangle"


def size_word(mask: np.ndarray) -> str:
    """Coverage of the image (SB's sibling rule): > 0.30 large, > 0.08 medium, < 0.001 tiny,
    else small."""
    coverage = float(np.count_nonzero(mask)) / mask.size
    if coverage > 0.30:
        return "large"
    if coverage > 0.08:
        return "medium"
    if coverage < 0.001:
        return "tiny"
    return "small"


def position_word(mask: np.ndarray) -> str:
    """Centroid on a 3 x 3 grid: ``"top left"`` ... ``"bottom right"``; the middle cell is
    ``"center"``; an empty mask is ``"none"``."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return "none"
    h, w = mask.shape
    vertical = ("top", "center", "bottom")[min(2, int(3 * rows.mean() / h))]
    horizontal = ("left", "center", "right")[min(2, int(3 * cols.mean() / w))]
    return "center" if vertical == horizontal == "center" else f"{vertical} {horizontal}"


def component_count(mask: np.ndarray) -> int:
    """Number of 8-connected components of a ``(H, W)`` mask."""
    return int(ndi.label(mask, structure=np.ones((3, 3)))[1])
