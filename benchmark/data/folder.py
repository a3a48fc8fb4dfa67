"""A plain folder of echo images: image files, optional label maps and a metadata CSV.

Layout (documented in docs/DATA.md)::

    ROOT/metadata.csv       one row per image
    ROOT/<image files>      PNG (8/16-bit, grey or colour) or NIfTI, paths relative to ROOT
    ROOT/<label files>      optional label maps with values 0..3, same size as their image

CSV columns: ``image`` and ``patient`` are required; ``label``, ``view``, ``phase``, ``sex``,
``age``, ``quality``, ``ef``, ``split``, ``source`` and ``label_source`` are optional. A blank
or missing attribute becomes ``"unknown"`` (``age`` -1, ``ef`` NaN); a blank split is derived from
the patient id (~70/10/20, stable). Extra columns are kept.
"""

from __future__ import annotations

import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from benchmark.data.errors import DataError
from benchmark.data.normalise import resize_image, resize_labels
from benchmark.data.readers import read_pair
from benchmark.data.records import EchoData

METADATA = "metadata.csv"
UNKNOWN = "unknown"
ALLOWED = {
    "view": {"2CH", "4CH"},
    "phase": {"ED", "ES"},
    "sex": {"F", "M"},
    "quality": {"Good", "Medium", "Poor"},
    "split": {"train", "val", "test"},
    "source": {"real", "synthetic"},
}


def patient_split(patient: str) -> str:
    """A stable ~70/10/20 train/val/test split from a hash of the patient id."""
    bucket = zlib.crc32(patient.encode()) % 10
    return "train" if bucket < 7 else ("val" if bucket == 7 else "test")


def read_metadata(root: str | Path) -> pd.DataFrame:
    """``ROOT/metadata.csv`` with every :data:`~benchmark.data.records.META_COLUMNS` filled."""
    root = Path(root)
    path = root / METADATA
    if not path.is_file():
        raise DataError(path, "missing metadata file")
    try:
        meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several parser error types
        raise DataError(path, f"unreadable CSV ({str(exc).strip()[:200]})") from None
    for column in ("image", "patient"):
        if column not in meta.columns:
            raise DataError(path, f"missing column {column!r}")
    if meta.empty:
        raise DataError(path, "no rows")
    meta = meta.apply(lambda col: col.str.strip())
    for column, allowed in ALLOWED.items():
        if column not in meta.columns:
            meta[column] = ""
        bad = sorted(set(meta[column]) - allowed - {"", UNKNOWN})
        if bad:
            raise DataError(path, f"column {column!r} has values {bad}, allowed {sorted(allowed)}")
    blank_split = meta["split"] == ""
    meta.loc[blank_split, "split"] = meta.loc[blank_split, "patient"].map(patient_split)
    meta.loc[meta["source"] == "", "source"] = "real"
    for column in ("view", "phase", "sex", "quality"):
        meta.loc[meta[column] == "", column] = UNKNOWN
    if (meta["patient"] == "").any():
        raise DataError(path, f"blank patient in row {int(np.argmax(meta['patient'] == '')) + 2}")
    for column in ("image", "label"):
        if column in meta.columns:
            for row, rel in enumerate(meta[column], start=2):
                _check_inside(path, row, column, rel)
    try:
        age = meta["age"] if "age" in meta.columns else pd.Series([""] * len(meta))
        meta["age"] = [int(float(a)) if a else -1 for a in age]
        ef = meta["ef"] if "ef" in meta.columns else pd.Series([""] * len(meta))
        meta["ef"] = [float(e) if e else float("nan") for e in ef]
    except ValueError as exc:
        raise DataError(path, f"bad number in age or ef ({exc})") from None
    has_label = meta["label"] != "" if "label" in meta.columns else pd.Series(False, meta.index)
    if has_label.any() and not has_label.all():
        row = int(np.argmin(has_label.to_numpy())) + 2
        raise DataError(path, f"row {row} has no label while other rows do (all or none)")
    if "label_source" not in meta.columns:
        meta["label_source"] = ""
    blank = meta["label_source"] == ""
    meta.loc[blank, "label_source"] = np.where(has_label[blank], "manual", "none")
    return meta


def _check_inside(path: Path, row: int, column: str, rel: str) -> None:
    """A metadata path must stay inside the dataset root as written: relative, no ``..``.

    Checked on the text, before any file is opened, so a metadata.csv from elsewhere cannot
    make the loader read files outside its folder (symlinks the tree's owner placed inside
    the root are followed: they are the owner's choice, not the CSV's).
    """
    if not rel:
        if column == "image":
            raise DataError(path, f"row {row} has a blank image path")
        return
    pure = PurePosixPath(rel.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(rel).drive or ".." in pure.parts:
        raise DataError(
            path,
            f"row {row}: {column} path {rel!r} escapes the dataset root "
            "(paths must be relative to the folder of metadata.csv, without '..')",
        )


def load_folder(root: str | Path, size: int) -> EchoData:
    """All images of a folder dataset at ``size`` x ``size``; masks ``None`` without labels.

    Raises :class:`DataError` naming the file for a missing/unreadable image or label map,
    a shape mismatch or label values outside 0..3.
    """
    root = Path(root)
    meta = read_metadata(root)
    labelled = "label" in meta.columns and (meta["label"] != "").all()
    images = np.empty((len(meta), size, size), dtype=np.float32)
    masks = np.empty((len(meta), size, size), dtype=np.uint8) if labelled else None
    for i, (image, label) in enumerate(_pairs(root, meta, labelled)):
        images[i] = resize_image(image, size)
        if masks is not None:
            masks[i] = resize_labels(label, size)
    return EchoData(images=images, masks=masks, meta=meta)


def check_folder(root: str | Path) -> tuple[pd.DataFrame, bool]:
    """Read and check every file without resizing; returns the metadata and whether the
    images are labelled."""
    root = Path(root)
    meta = read_metadata(root)
    labelled = "label" in meta.columns and (meta["label"] != "").all()
    for _ in _pairs(root, meta, labelled):
        pass
    return meta, labelled


def _pairs(root: Path, meta: pd.DataFrame, labelled: bool):
    """Yield ``(image, label or None)`` for every row, read and checked."""
    for _, row in meta.iterrows():
        yield read_pair(root / row["image"], root / row["label"] if labelled else None)
