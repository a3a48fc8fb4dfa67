"""A plain folder of echo images: image files, optional label maps and a metadata CSV.

Layout (documented in docs/DATA.md)::

    ROOT/metadata.csv       one row per image
    ROOT/<image files>      PNG (8/16-bit, grey or colour) or NIfTI, paths relative to ROOT
    ROOT/<label files>      optional label maps with values 0..3, same size as their image

CSV columns: ``image`` and ``patient`` are required; ``label``, ``view``, ``phase``, ``sex``,
``age``, ``quality``, ``ef``, ``split``, ``source`` and ``label_source`` are optional. A blank
or missing attribute becomes ``"unknown"`` (``age`` -1, ``ef`` NaN); a blank split is derived from
the patient id (~70/10/20, stable). Extra columns are kept. ``spacing_row_mm`` and
``spacing_col_mm`` (optional, together) give a file's pixel spacing in mm, overriding its header
(PNG files have none); in the loaded data they hold the spacing at the stored size.
"""

from __future__ import annotations

import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from benchmark.data.errors import DataError
from benchmark.data.normalise import resize_image, resize_labels, resized_spacing
from benchmark.data.readers import read_pair
from benchmark.data.records import SPACING_COLUMNS, EchoData

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
    _fill_splits(path, meta)
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
    _read_spacing_columns(path, meta)
    has_label = meta["label"] != "" if "label" in meta.columns else pd.Series(False, meta.index)
    if has_label.any() and not has_label.all():
        row = int(np.argmin(has_label.to_numpy())) + 2
        raise DataError(path, f"row {row} has no label while other rows do (all or none)")
    if "label_source" not in meta.columns:
        meta["label_source"] = ""
    blank = meta["label_source"] == ""
    meta.loc[blank, "label_source"] = np.where(has_label[blank], "manual", "none")
    return meta


def _fill_splits(path: Path, meta: pd.DataFrame) -> None:
    """Blank splits from the patient's other rows, else from :func:`patient_split`.

    Splits are by patient: a patient whose rows name two splits would leak its images
    from training into evaluation, so that is an error naming the patient.
    """
    named = meta.loc[meta["split"] != "", ["patient", "split"]].drop_duplicates()
    several = named["patient"][named["patient"].duplicated()]
    if len(several):
        patient = several.iloc[0]
        splits = sorted(named.loc[named["patient"] == patient, "split"])
        raise DataError(
            path, f"patient {patient!r} is in splits {splits} (splits are by patient, one each)"
        )
    own = dict(zip(named["patient"], named["split"], strict=True))
    blank = meta["split"] == ""
    meta.loc[blank, "split"] = [own.get(p) or patient_split(p) for p in meta.loc[blank, "patient"]]


def _read_spacing_columns(path: Path, meta: pd.DataFrame) -> None:
    """The optional spacing columns as floats (NaN where blank), both or neither."""
    present = [c for c in SPACING_COLUMNS if c in meta.columns]
    if not present:
        return
    if len(present) == 1:
        missing = next(c for c in SPACING_COLUMNS if c not in present)
        raise DataError(path, f"column {present[0]!r} needs {missing!r} beside it")
    for column in SPACING_COLUMNS:
        values = []
        for row, text in enumerate(meta[column], start=2):
            try:
                value = float(text) if text else float("nan")
            except ValueError:
                value = None
            if value is None or not (np.isnan(value) or 0 < value < np.inf):
                problem = f"{column} must be a positive number or blank, got {text!r}"
                raise DataError(path, f"row {row}: {problem}")
            values.append(value)
        meta[column] = values


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
    spacing = np.empty((len(meta), 2))
    for i, (image, label, native) in enumerate(_pairs(root, meta, labelled)):
        images[i] = resize_image(image, size)
        if masks is not None:
            masks[i] = resize_labels(label, size)
        spacing[i] = resized_spacing(native, image.shape, size)
    meta[list(SPACING_COLUMNS)] = spacing
    return EchoData(images=images, masks=masks, meta=meta)


def check_folder(root: str | Path) -> tuple[pd.DataFrame, bool]:
    """Read and check every file without resizing; returns the metadata (with the files' own
    pixel spacing) and whether the images are labelled."""
    root = Path(root)
    meta = read_metadata(root)
    labelled = "label" in meta.columns and (meta["label"] != "").all()
    nan = (float("nan"), float("nan"))
    spacing = [pair.spacing or nan for pair in _pairs(root, meta, labelled)]
    meta[list(SPACING_COLUMNS)] = np.array(spacing, dtype=float).reshape(-1, 2)
    return meta, labelled


def _pairs(root: Path, meta: pd.DataFrame, labelled: bool):
    """Yield a :class:`Pair` for every row, read and checked; the spacing columns of the CSV,
    where given, replace the file header's spacing."""
    given = all(c in meta.columns for c in SPACING_COLUMNS)
    for _, row in meta.iterrows():
        pair = read_pair(root / row["image"], root / row["label"] if labelled else None)
        if given and np.isfinite(row[list(SPACING_COLUMNS)].to_numpy(dtype=float)).all():
            pair = pair._replace(spacing=(row[SPACING_COLUMNS[0]], row[SPACING_COLUMNS[1]]))
        yield pair
