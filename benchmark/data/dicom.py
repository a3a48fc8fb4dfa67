"""Ultrasound DICOM cines: frames as grey images, and import into the folder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.pixels import pixel_array

from benchmark.data.atomic import atomic_folder
from benchmark.data.errors import DataError
from benchmark.data.folder import METADATA, UNKNOWN
from benchmark.data.readers import write_png
from benchmark.data.records import SPACING_COLUMNS
from benchmark.data.sector import cine_sector


def read_cine(path: str | Path) -> tuple[np.ndarray, pydicom.Dataset]:
    """Frames ``(T, H, W)`` uint8 grey (luma) and the dataset (for its header).

    YBR photometric data is not converted to RGB and back: its Y channel already is the luma.
    RGB is converted with the same BT.601 weights; MONOCHROME1 is inverted.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
        raw = pixel_array(ds, raw=True)
    except Exception as exc:  # pydicom raises many types for broken or pixel-less files
        raise DataError(path, f"unreadable DICOM or no pixel data ({str(exc)[:200]})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    if frames == 1:
        raw = raw[None]
    if colour:
        if photometric.startswith("YBR"):
            gray = raw[..., 0].astype(np.float32)
        else:
            gray = raw[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        gray = raw.astype(np.float32)
        if photometric == "MONOCHROME1":
            gray = gray.max() - gray
    if gray.max() > 255:  # 16-bit greys are scaled to 8 bits
        gray = gray * (255.0 / gray.max())
    return np.clip(np.round(gray), 0, 255).astype(np.uint8), ds


_CM = 3  # PhysicalUnits{X,Y}Direction code for centimetres (DICOM PS3.3 C.8.5.5.1.15)


def ultrasound_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """Pixel spacing ``(row, col)`` in mm of the cine's 2-D tissue region, or None.

    Read from the first region of ``SequenceOfUltrasoundRegions`` with a 2-D spatial format
    and physical units in cm. None when there is no such region or it does not lie inside
    the frame: its coordinates then refer to other pixels (e.g. a cine resized after
    acquisition, whose spacing no longer holds).
    """
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        if region.get("RegionSpatialFormat") != 1 or units != (_CM, _CM):
            continue
        dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
        inside = (
            int(region.get("RegionLocationMaxX1", cols)) < cols
            and int(region.get("RegionLocationMaxY1", rows)) < rows
        )
        if inside and dx and dy and float(dx) > 0 and float(dy) > 0:
            return (10 * abs(float(dy)), 10 * abs(float(dx)))
        return None
    return None


def _patient_attrs(ds: pydicom.Dataset) -> dict:
    sex = str(ds.get("PatientSex", "")).upper()[:1]
    age_text = str(ds.get("PatientAge", ""))  # e.g. "045Y"
    age = int(age_text[:3]) if age_text[:3].isdigit() and age_text.endswith("Y") else -1
    return {"sex": sex if sex in ("F", "M") else UNKNOWN, "age": age}


def import_dicom(
    path: str | Path,
    out: str | Path,
    view: str = UNKNOWN,
    patient: str | None = None,
    split: str = "",
    keep_overlays: bool = False,
) -> Path:
    """Write every frame of a DICOM cine as ``out/images/frame_XXXX.png`` plus ``metadata.csv``.

    Frames are unlabelled (no ``label`` column) and have phase and quality ``unknown``. Pixels
    outside the estimated sector (burnt-in text, ECG, markers) are set to 0 unless
    ``keep_overlays``. The pixel spacing of :func:`ultrasound_spacing` goes into the spacing
    columns (blank when unknown). The folder appears only when complete.
    """
    path = Path(path)
    frames, ds = read_cine(path)
    if not keep_overlays:
        frames = frames * cine_sector(frames)[None]
    patient = patient or str(ds.get("PatientID", "") or path.stem)
    spacing = ultrasound_spacing(ds) or ("", "")
    rows = []
    with atomic_folder(out) as tmp:
        (tmp / "images").mkdir()
        for t, frame in enumerate(frames):
            name = f"images/frame_{t:04d}.png"
            write_png(frame.astype(np.uint8), tmp / name)
            rows.append(
                dict(
                    image=name,
                    patient=patient,
                    view=view,
                    phase=UNKNOWN,
                    quality=UNKNOWN,
                    ef="",
                    split=split,
                    source="real",
                    label_source="none",
                    frame=t,
                    source_file=path.name,
                    **_patient_attrs(ds),
                    **dict(zip(SPACING_COLUMNS, spacing)),
                )
            )
        pd.DataFrame(rows).to_csv(tmp / METADATA, index=False)
    return Path(out)
