"""Summarise (and thereby validate) a data tree: CAMUS, folder layout or a saved EchoData."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.data.camus import check_camus, find_layout
from benchmark.data.errors import DataError
from benchmark.data.folder import METADATA, check_folder
from benchmark.data.records import SPACING_COLUMNS, EchoData
from benchmark.data.sources import check_root


def detect_layout(root: Path) -> str:
    """``"camus-nifti"``, ``"camus-legacy"``, ``"folder"`` or ``"echodata"`` (saved arrays)."""
    if (root / METADATA).is_file():
        return "folder"
    if (root / "manifest.csv").is_file() and (root / "images.npy").is_file():
        return "echodata"
    if not any(root.iterdir()):
        raise DataError(root, "empty folder")
    try:
        layout, _ = find_layout(root)
    except DataError:
        raise DataError(
            root,
            "no known layout (expected database_nifti/, training/+testing/, "
            f"{METADATA}, or images.npy+manifest.csv)",
        ) from None
    return f"camus-{layout}"


def check_tree(root: str | Path) -> tuple[str, pd.DataFrame, bool]:
    """The layout name, per-image metadata and whether labelled, after reading and checking
    every file of the tree (images are not resized). Raises :class:`DataError`."""
    root = check_root(root)
    layout = detect_layout(root)
    if layout == "folder":
        meta, labelled = check_folder(root)
        return layout, meta, labelled
    if layout == "echodata":
        try:
            data = EchoData.load(root)  # DataError naming the bad file
        except OSError as exc:
            raise DataError(root, f"unreadable saved dataset ({exc})") from None
        return layout, data.meta, data.masks is not None
    return layout, check_camus(root), True


def inspect_tree(root: str | Path) -> dict:
    """Counts of a data tree after reading and checking every file.

    Returns ``{"root", "layout", "patients", "images", "labelled", "splits": {"train",
    "val", "test"} (patients), "views", "phases", "qualities", "spacing"}`` (views, phases
    and qualities count images; spacing: how many images have a pixel spacing and its
    ``[min, max]`` per axis in mm, as stored). Raises :class:`DataError` naming the first bad
    file.
    """
    layout, meta, labelled = check_tree(root)
    per_patient = meta.drop_duplicates("patient")["split"].value_counts()

    def counts(column: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in meta[column].value_counts().sort_index().items()}

    return {
        "root": str(root),
        "layout": layout,
        "patients": int(meta["patient"].nunique()),
        "images": len(meta),
        "labelled": bool(labelled),
        "splits": {s: int(per_patient.get(s, 0)) for s in ("train", "val", "test")},
        "views": counts("view"),
        "phases": counts("phase"),
        "qualities": counts("quality"),
        "spacing": _spacing_summary(meta),
    }


def _spacing_summary(meta: pd.DataFrame) -> dict:
    if not all(c in meta.columns for c in SPACING_COLUMNS):
        return {"images": 0}
    values = meta[list(SPACING_COLUMNS)].astype(float).dropna()
    out: dict = {"images": len(values)}
    if len(values):
        for axis, column in zip(("row_mm", "col_mm"), SPACING_COLUMNS):
            out[axis] = [float(values[column].min()), float(values[column].max())]
    return out


def format_summary(summary: dict) -> str:
    """A few human-readable lines for :func:`inspect_tree`'s result."""

    def kv(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

    labelled = "labelled" if summary["labelled"] else "no labels"
    return "\n".join(
        [
            f"root       {summary['root']}",
            f"layout     {summary['layout']}",
            f"patients   {summary['patients']}",
            f"images     {summary['images']} ({labelled})",
            f"splits     {kv(summary['splits'])} (patients)",
            f"views      {kv(summary['views'])}",
            f"phases     {kv(summary['phases'])}",
            f"qualities  {kv(summary['qualities'])}",
            f"spacing    {_spacing_line(summary['spacing'], summary['images'])}",
        ]
    )


def _spacing_line(spacing: dict, n_images: int) -> str:
    if not spacing["images"]:
        return "none (distances in pixels only)"
    ranges = ", ".join(
        f"{axis} {lo:.3g}-{hi:.3g} mm"
        for axis, (lo, hi) in (("row", spacing["row_mm"]), ("col", spacing["col_mm"]))
    )
    return f"{spacing['images']} of {n_images} images; {ranges}"
