"""Pixel spacing: read from NIfTI / MetaImage headers, the folder CSV, DICOM ultrasound
regions and the phantom; rescaled with the image; written back by write_camus."""

import copy

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom import examples

from benchmark.data.camus import check_camus, load_camus, write_camus
from benchmark.data.dicom import ultrasound_spacing
from benchmark.data.errors import DataError
from benchmark.data.folder import check_folder, load_folder
from benchmark.data.phantom import IMAGE_HEIGHT_MM, make_phantom
from benchmark.data.readers import read_image, write_nifti, write_png

SPACING = ["spacing_row_mm", "spacing_col_mm"]


def test_nifti_spacing_is_row_col_in_mm_whatever_the_declared_unit(tmp_path):
    arr = np.zeros((6, 4), np.uint8)
    write_nifti(arr, tmp_path / "a.nii.gz", (0.3, 0.2))
    assert read_image(tmp_path / "a.nii.gz")[1] == pytest.approx((0.3, 0.2))
    img = nib.Nifti1Image(np.ascontiguousarray(arr.T), np.eye(4))
    img.header.set_zooms((2e-4, 3e-4))  # (x, y) in metres
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "m.nii.gz")
    assert read_image(tmp_path / "m.nii.gz")[1] == pytest.approx((0.3, 0.2))
    write_nifti(arr, tmp_path / "default.nii.gz")  # pixdim 1, no unit: a writer's default
    assert read_image(tmp_path / "default.nii.gz")[1] is None


def test_metaimage_spacing_and_png_without(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((6, 4), np.uint8))
    img.SetSpacing((0.2, 0.3))  # ElementSpacing x (columns), y (rows)
    sitk.WriteImage(img, str(tmp_path / "a.mhd"))
    arr, spacing = read_image(tmp_path / "a.mhd")
    assert arr.shape == (6, 4) and spacing == pytest.approx((0.3, 0.2))
    write_png(np.zeros((6, 4), np.uint8), tmp_path / "a.png")
    assert read_image(tmp_path / "a.png")[1] is None


def test_a_zero_spacing_is_refused_naming_the_file(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((6, 4), np.uint8))
    sitk.WriteImage(img, str(tmp_path / "a.mhd"))
    header = tmp_path / "a.mhd"
    header.write_text(header.read_text().replace("ElementSpacing = 1 1", "ElementSpacing = 0 1"))
    with pytest.raises(DataError, match="a.mhd.*spacing"):
        read_image(header)


@pytest.mark.parametrize("layout", ["nifti", "legacy"])
def test_camus_spacing_is_rescaled_per_axis(camus_tree, camus_pair, layout):
    root = camus_tree(layout=layout, patients=2)
    row, col = camus_pair.spacing
    native = check_camus(root)
    assert native[SPACING].to_numpy() == pytest.approx(np.tile([row, col], (8, 1)))
    data = load_camus(root, 16)  # 40 x 24 -> 16 x 16
    expected = (row * camus_pair.H / 16, col * camus_pair.W / 16)
    assert data.spacing() == pytest.approx(np.tile(expected, (8, 1)))


def test_write_camus_keeps_the_spacing(tmp_path):
    ph = make_phantom(3, 16, seed=0)
    back = load_camus(write_camus(ph, tmp_path / "out"), 16)
    assert back.spacing() == pytest.approx(ph.spacing())


def test_phantom_has_its_nominal_isotropic_spacing():
    data = make_phantom(1, 32, seed=0)
    assert data.spacing() == pytest.approx(np.full((4, 2), IMAGE_HEIGHT_MM / 32))
    assert data.subset([0, 1]).spacing().shape == (2, 2)
    # A set holding images without spacing (synthetic ones, PNGs) has no spacing at all.
    mixed = data.meta.copy()
    mixed.loc[0, "spacing_row_mm"] = float("nan")
    assert type(data)(data.images, data.masks, mixed).spacing() is None


def _png_folder(root, spacing_columns):
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(2):
        write_png(np.full((20, 10), 50, np.uint8), root / f"img/{i}.png")
        rows.append({"image": f"img/{i}.png", "patient": f"p{i}", **spacing_columns[i]})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_folder_csv_spacing_is_the_files_and_is_rescaled(tmp_path):
    cols = [
        {"spacing_row_mm": 0.4, "spacing_col_mm": 0.5},
        {"spacing_row_mm": "", "spacing_col_mm": ""},
    ]
    root = _png_folder(tmp_path / "f", cols)
    meta, _ = check_folder(root)
    assert meta.loc[0, SPACING].tolist() == [0.4, 0.5] and meta.loc[1, SPACING].isna().all()
    data = load_folder(root, 10)  # 20 x 10 -> 10 x 10
    assert data.meta.loc[0, SPACING].tolist() == pytest.approx([0.8, 0.5])
    assert data.spacing() is None  # the second PNG has none


@pytest.mark.parametrize(
    ("columns", "problem"),
    [
        ({"spacing_row_mm": 0.4}, "'spacing_row_mm' needs 'spacing_col_mm'"),
        ({"spacing_row_mm": -1, "spacing_col_mm": 0.5}, "row 2: spacing_row_mm must be a positive"),
        ({"spacing_row_mm": 0.4, "spacing_col_mm": "wide"}, "spacing_col_mm must be a positive"),
    ],
)
def test_folder_bad_spacing_columns_are_refused(tmp_path, columns, problem):
    root = _png_folder(tmp_path / "f", [columns, columns])
    with pytest.raises(DataError, match=problem) as err:
        load_folder(root, 10)
    assert "metadata.csv" in str(err.value)


def test_dicom_spacing_only_from_a_region_inside_the_frame():
    ds = pydicom.dcmread(examples.get_path("ybr_color"), stop_before_pixels=True)
    # The example's region spans x up to 595 in a 320-column frame: it describes the
    # acquisition before the file was downsized, so its spacing does not hold here.
    assert ultrasound_spacing(ds) is None
    fixed = copy.deepcopy(ds)
    region = fixed.SequenceOfUltrasoundRegions[0]
    region.RegionLocationMinX0, region.RegionLocationMaxX1 = 40, 300
    region.RegionLocationMinY0, region.RegionLocationMaxY1 = 15, 210
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.03  # cm
    assert ultrasound_spacing(fixed) == pytest.approx((0.3, 0.2))
    region.PhysicalUnitsXDirection = 4  # seconds: not a spatial axis
    assert ultrasound_spacing(fixed) is None
