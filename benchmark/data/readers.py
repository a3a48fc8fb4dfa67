"""Reading and writing 2-D image and label files (NIfTI, MetaImage, PNG) in one orientation.

Arrays are always ``(rows, cols)`` with the ultrasound sector apex at the top row.
MetaImage and PNG files read through SimpleITK come out that way. NIfTI files follow the CAMUS
NIfTI release, which stores the same pixels transposed (nibabel returns ``(cols, rows)``, NIfTI's
first axis being x), so NIfTI arrays are transposed on read and on write. The rule depends on the
file format only and is applied identically to an image and its label map; the pair must then
have the same shape, otherwise the label map is rejected rather than guessed.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from benchmark.data.errors import DataError
from benchmark.data.normalise import to_labels, to_unit_range

IMAGE_SUFFIXES = (".png", ".nii.gz", ".nii", ".mhd")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as in YBR_FULL


def read_array(path: str | Path) -> np.ndarray:
    """A 2-D file as ``(rows, cols)``, or ``(rows, cols, channels)`` for a colour PNG.

    Singleton axes are dropped. Raises :class:`DataError` for a missing, unreadable or
    truncated file, or one that is not 2-D.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing file")
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        import SimpleITK as sitk  # here, not at import: NIfTI and the phantom do without it
    try:
        if name.endswith((".nii", ".nii.gz")):
            arr = np.squeeze(np.asanyarray(nib.load(str(path)).dataobj))
            if arr.ndim == 2:
                arr = arr.T
        else:
            arr = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    except Exception as exc:  # nibabel, SimpleITK and zlib raise many types for a broken file
        text = str(exc).strip()
        problem = text.splitlines()[-1][:200] if text else type(exc).__name__
        raise DataError(path, f"unreadable or truncated file ({problem})") from None
    colour = arr.ndim == 3 and arr.shape[-1] in (3, 4) and name.endswith(".png")
    if arr.ndim != 2 and not colour:
        raise DataError(path, f"expected a 2-D image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def to_gray(arr: np.ndarray) -> np.ndarray:
    """``(H, W)`` unchanged, ``(H, W, 3|4)`` to luma (alpha ignored), keeping 8-bit as uint8."""
    if arr.ndim == 2:
        return arr
    gray = arr[..., :3].astype(np.float32) @ _LUMA
    return np.round(gray).astype(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else gray


def read_pair(
    image_path: str | Path, label_path: str | Path | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """An image ``(H, W)`` float32 in [0, 1] and its label map ``(H, W)`` uint8 (or None).

    Raises :class:`DataError` naming the label file when its shape differs from the image's
    or it holds values outside 0..3.
    """
    image_path = Path(image_path)
    image = to_unit_range(to_gray(read_array(image_path)), image_path)
    if label_path is None:
        return image, None
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
    return image, to_labels(raw, label_path)


def write_nifti(array: np.ndarray, path: str | Path) -> None:
    """Write ``(rows, cols)`` as NIfTI in the CAMUS release's transposed order."""
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4)), str(path))


def write_png(array: np.ndarray, path: str | Path) -> None:
    """Write ``(rows, cols)`` uint8 or uint16 as a grey PNG."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16 pixels, got {array.dtype}")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
