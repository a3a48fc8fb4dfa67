"""Reading and writing 2-D image and label files (NIfTI, MetaImage, PNG) in one orientation.

Arrays are always ``(rows, cols)`` with the ultrasound sector apex at the top row.
MetaImage and PNG files read through SimpleITK come out that way. NIfTI files follow the CAMUS
NIfTI release, which stores the same pixels transposed (nibabel returns ``(cols, rows)``, NIfTI's
first axis being x), so NIfTI arrays are transposed on read and on write. The rule depends on the
file format only and is applied identically to an image and its label map; the pair must then
have the same shape, otherwise the label map is rejected rather than guessed.

Pixel spacing, ``(row, col)`` in mm, comes from the file header: NIfTI ``pixdim`` (in its
declared unit, mm when it declares none) and MetaImage ``ElementSpacing`` (mm by convention).
A header left at its default (every spacing 1 with no declared unit, as writers emit when
they know none) and PNG files give ``None``: no physical scale, rather than 1 mm per pixel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from benchmark.data.errors import DataError
from benchmark.data.normalise import to_labels, to_unit_range

if TYPE_CHECKING:
    import nibabel as nib

IMAGE_SUFFIXES = (".png", ".nii.gz", ".nii", ".mhd")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as in YBR_FULL
_NIFTI_UNIT_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}

Spacing = tuple[float, float]  # (row, col) in mm


class Pair(NamedTuple):
    """An image ``(H, W)`` float32 in [0, 1], its label map ``(H, W)`` uint8 (or None) and
    the image's pixel spacing ``(row, col)`` in mm (or None)."""

    image: np.ndarray
    label: np.ndarray | None
    spacing: Spacing | None


def read_array(path: str | Path) -> np.ndarray:
    """A 2-D file as ``(rows, cols)``, or ``(rows, cols, channels)`` for a colour PNG.

    Singleton axes are dropped. Raises :class:`DataError` for a missing, unreadable or
    truncated file, or one that is not 2-D.
    """
    return read_image(path)[0]


def read_image(path: str | Path) -> tuple[np.ndarray, Spacing | None]:
    """:func:`read_array`'s array and the pixel spacing ``(row, col)`` in mm from the
    header (None for PNG files and default headers)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing file")
    name = path.name.lower()
    # Imported here, not with the module: the phantom needs neither, and the GPU kit carries
    # neither (scripts/gpu/wheels.txt).
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib
    else:
        import SimpleITK as sitk
    try:
        if name.endswith((".nii", ".nii.gz")):
            img = nib.load(str(path))
            arr = np.squeeze(np.asanyarray(img.dataobj))
            if arr.ndim == 2:
                arr = arr.T
            spacing = _nifti_spacing(img, path)
        else:
            img = sitk.ReadImage(str(path))
            arr = np.squeeze(sitk.GetArrayFromImage(img))
            spacing = None if name.endswith(".png") else _sitk_spacing(img, path)
    except DataError:
        raise
    except Exception as exc:  # nibabel, SimpleITK and zlib raise many types for a broken file
        text = str(exc).strip()
        problem = text.splitlines()[-1][:200] if text else type(exc).__name__
        raise DataError(path, f"unreadable or truncated file ({problem})") from None
    colour = arr.ndim == 3 and arr.shape[-1] in (3, 4) and name.endswith(".png")
    if arr.ndim != 2 and not colour:
        raise DataError(path, f"expected a 2-D image, got shape {arr.shape}")
    return np.ascontiguousarray(arr), spacing


def _checked(spacing: Spacing, path: Path) -> Spacing:
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise DataError(path, f"pixel spacing must be positive, got {spacing}")
    return spacing


def _nifti_spacing(img: nib.Nifti1Image, path: Path) -> Spacing | None:
    """NIfTI's first axis is x (columns): pixdim (x, y) becomes (row, col) = (y, x)."""
    zooms = tuple(float(z) for z in img.header.get_zooms()[:2])
    unit = img.header.get_xyzt_units()[0]
    if len(zooms) < 2 or (unit == "unknown" and zooms == (1.0, 1.0)):
        return None
    scale = _NIFTI_UNIT_MM.get(unit, 1.0)
    return _checked((zooms[1] * scale, zooms[0] * scale), path)


def _sitk_spacing(img, path: Path) -> Spacing | None:
    """MetaImage ElementSpacing is (x, y[, z]) in mm; (1, 1) is SimpleITK's default."""
    x, y = (float(v) for v in img.GetSpacing()[:2])
    return None if (x, y) == (1.0, 1.0) else _checked((y, x), path)


def to_gray(arr: np.ndarray) -> np.ndarray:
    """``(H, W)`` unchanged, ``(H, W, 3|4)`` to luma (alpha ignored), keeping 8-bit as uint8."""
    if arr.ndim == 2:
        return arr
    gray = arr[..., :3].astype(np.float32) @ _LUMA
    return np.round(gray).astype(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else gray


def read_pair(image_path: str | Path, label_path: str | Path | None) -> Pair:
    """The image, its label map (or None) and the image's spacing, read and checked.

    Raises :class:`DataError` naming the label file when its shape differs from the image's
    or it holds values outside 0..3.
    """
    image_path = Path(image_path)
    raw_image, spacing = read_image(image_path)
    image = to_unit_range(to_gray(raw_image), image_path)
    if label_path is None:
        return Pair(image, None, spacing)
    label_path = Path(label_path)
    raw = read_array(label_path)
    if raw.ndim == 3:  # a colour PNG label map is accepted only if it is really grey
        if not (raw[..., :3] == raw[..., :1]).all():
            raise DataError(label_path, "label map has colour channels that differ")
        raw = raw[..., 0]
    if raw.shape != image.shape:
        raise DataError(
            label_path,
            f"label shape {raw.shape} does not match image {image_path.name} {image.shape}",
        )
    return Pair(image, to_labels(raw, label_path), spacing)


def write_nifti(array: np.ndarray, path: str | Path, spacing: Spacing | None = None) -> None:
    """Write ``(rows, cols)`` as NIfTI in the CAMUS release's transposed order, with the
    pixel spacing ``(row, col)`` in mm when given."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4))
    if spacing is not None:
        row, col = spacing
        img.header.set_zooms((col, row))
        img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def write_png(array: np.ndarray, path: str | Path) -> None:
    """Write ``(rows, cols)`` uint8 or uint16 as a grey PNG."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16 pixels, got {array.dtype}")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
