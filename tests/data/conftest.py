"""Tiny CAMUS trees of both layouts, written the way the public releases store them."""

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

H, W = 40, 24  # taller than wide, like CAMUS: a transposed read cannot go unnoticed
SPACING = (0.3, 0.2)  # (row, col) mm in the headers: anisotropic, so a swap is seen


def fixture_pair(patient: int, view: str, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric ``(H, W)`` uint8 image and its label map.

    LV (1) is a block in the upper left, MYO (2) a band right of it, LA (3) a block at the
    bottom right; the image is 20 + 60 * label, plus the patient number in the top-left pixel
    and the view/phase in the one beside it, so every image is distinct and the image
    brightness tells where each label should be.
    """
    label = np.zeros((H, W), np.uint8)
    label[4:20, 2:9] = 1
    label[4:20, 9:12] = 2
    label[28:37, 14:22] = 3
    if phase == "ES":
        label[16:20, 2:9] = 0  # ES cavity is smaller
    image = (20 + 60 * label).astype(np.uint8)
    image[0, 0] = patient
    image[0, 1] = {"2CH": 1, "4CH": 2}[view] * 10 + {"ED": 1, "ES": 2}[phase]
    return image, label


def _cfg_text(patient: int, view: str, newline: str) -> str:
    lines = [
        "ED: 1",
        "ES: 12",
        "NbFrame: 12",
        f"Sex: {'F' if patient % 2 else 'M'}",
        f"Age: {40 + patient}",
        f"ImageQuality: {['Good', 'Medium', 'Poor'][patient % 3]}",
        "LVedv: 100.0",
        "LVesv: 45.5",
        "LVef: 54.5",
        "FrameRate: 50",
        "SomeFutureKey: something: with a colon",
    ]
    return newline.join(lines) + newline


def write_camus_tree(
    root: Path,
    layout: str = "nifti",
    patients: int = 4,
    testing: int = 0,
    split_lists: dict | None = None,
    newline: str = "\n",
) -> Path:
    """Write a CAMUS tree with ``patients`` (training) patients and ``testing`` legacy test
    patients; ``split_lists`` maps split file stem -> patient names (NIfTI only)."""
    groups = [("database_nifti", patients)] if layout == "nifti" else [("training", patients)]
    if layout == "legacy" and testing:
        groups.append(("testing", testing))
    for group, count in groups:
        for p in range(1, count + 1):
            name = f"patient{p:04d}"
            pdir = root / group / name
            pdir.mkdir(parents=True)
            for view in ("2CH", "4CH"):
                (pdir / f"Info_{view}.cfg").write_bytes(_cfg_text(p, view, newline).encode())
                for phase in ("ED", "ES"):
                    image, label = fixture_pair(p + (100 if group == "testing" else 0), view, phase)
                    stem = pdir / f"{name}_{view}_{phase}"
                    if layout == "nifti":
                        # The release stores (cols, rows): x first.
                        for arr, suffix in ((image, ""), (label, "_gt")):
                            img = nib.Nifti1Image(np.ascontiguousarray(arr.T), np.eye(4))
                            img.header.set_zooms(SPACING[::-1])
                            img.header.set_xyzt_units("mm")
                            nib.save(img, f"{stem}{suffix}.nii.gz")
                    else:
                        for arr, suffix in ((image, ""), (label, "_gt")):
                            img = sitk.GetImageFromArray(arr)
                            img.SetSpacing(SPACING[::-1])  # ElementSpacing is (x, y)
                            sitk.WriteImage(img, f"{stem}{suffix}.mhd")
            # Half sequences exist in the releases and must be ignored.
            ext = ".nii.gz" if layout == "nifti" else ".mhd"
            seq = np.zeros((3, W, H) if layout == "nifti" else (3, H, W), np.uint8)
            if layout == "nifti":
                nib.save(
                    nib.Nifti1Image(seq, np.eye(4)), str(pdir / f"{name}_2CH_half_sequence{ext}")
                )
            else:
                sitk.WriteImage(
                    sitk.GetImageFromArray(seq), str(pdir / f"{name}_2CH_sequence{ext}")
                )
    if split_lists:
        sdir = root / "database_split"
        sdir.mkdir()
        for stem, names in split_lists.items():
            (sdir / f"subgroup_{stem}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


@pytest.fixture
def camus_pair():
    """The fixture's ``(image, label)`` maker and its on-disk shape, for expected values."""
    return SimpleNamespace(pair=fixture_pair, H=H, W=W, spacing=SPACING)


@pytest.fixture
def camus_tree(tmp_path):
    """Factory: ``camus_tree(layout="nifti", patients=4, ...)`` -> root of a fresh tree."""
    counter = iter(range(1000))

    def make(**kwargs) -> Path:
        return write_camus_tree(tmp_path / f"camus{next(counter)}", **kwargs)

    return make
