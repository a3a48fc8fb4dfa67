"""Folder datasets (PNG/NIfTI + metadata.csv) and DICOM cine import."""

import numpy as np
import pandas as pd
import pytest
from pydicom import examples

from benchmark.data.dicom import import_dicom, read_cine
from benchmark.data.errors import DataError
from benchmark.data.folder import load_folder, patient_split
from benchmark.data.readers import read_array, write_nifti, write_png


def _folder(root, n=3, labels=True, nifti=False):
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        image = np.full((20, 12), 10 * (i + 1), np.uint8)
        image[:5, :4] = 250  # bright top-left corner marks orientation
        label = np.zeros((20, 12), np.uint8)
        label[:5, :4] = 1
        label[15:, 8:] = 3
        ext = ".nii.gz" if nifti else ".png"
        write = write_nifti if nifti else write_png
        write(image, root / f"img/{i}{ext}")
        row = {"image": f"img/{i}{ext}", "patient": f"p{i}", "view": "4CH", "age": 50 + i}
        if labels:
            write(label, root / f"img/{i}_gt{ext}")
            row["label"] = f"img/{i}_gt{ext}"
        rows.append(row)
    pd.DataFrame(rows).assign(extra="x").to_csv(root / "metadata.csv", index=False)
    return root


@pytest.mark.parametrize("nifti", [False, True])
def test_folder_loads_with_defaults_and_orientation(tmp_path, nifti):
    data = load_folder(_folder(tmp_path / "f", nifti=nifti), 20)
    assert data.images.shape == (3, 20, 20)
    assert data.masks[0][2, 2] == 1 and data.masks[0][18, 18] == 3
    assert data.images[0][2, 2] > 0.9 and data.images[0][10, 10] == pytest.approx(10 / 255)
    row = data.meta.iloc[1]
    assert (row["view"], row["phase"], row["sex"], row["age"]) == ("4CH", "unknown", "unknown", 51)
    assert np.isnan(row["ef"]) and row["label_source"] == "manual" and row["extra"] == "x"
    assert list(data.meta["split"]) == [patient_split(p) for p in ("p0", "p1", "p2")]


def test_folder_without_labels(tmp_path):
    data = load_folder(_folder(tmp_path / "f", labels=False), 16)
    assert data.masks is None and set(data.meta["label_source"]) == {"none"}


def test_folder_errors(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "img/1_gt.png").unlink()
    with pytest.raises(DataError, match=r"img/1_gt\.png: missing file"):
        load_folder(root, 16)
    write_png(np.full((20, 12), 5, np.uint8), root / "img/1_gt.png")
    with pytest.raises(DataError, match=r"1_gt\.png: label values outside 0-3: 5"):
        load_folder(root, 16)
    write_png(np.zeros((12, 20), np.uint8), root / "img/1_gt.png")
    with pytest.raises(DataError, match=r"1_gt\.png: label shape \(12, 20\) does not match"):
        load_folder(root, 16)
    meta = pd.read_csv(root / "metadata.csv")
    meta.loc[0, "view"] = "3CH"
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata\.csv: column 'view' has values \['3CH'\]"):
        load_folder(root, 16)


def test_folder_splits_are_by_patient(tmp_path):
    """A blank row takes its patient's named split; a patient in two splits is refused."""
    root = _folder(tmp_path / "f")
    meta = pd.read_csv(root / "metadata.csv")
    other = next(s for s in ("train", "val", "test") if s != patient_split("p0"))
    meta["patient"] = ["p0", "p0", "p2"]
    meta["split"] = [other, "", ""]
    meta.to_csv(root / "metadata.csv", index=False)
    assert list(load_folder(root, 16).meta["split"]) == [other, other, patient_split("p2")]
    meta.loc[1, "split"] = next(s for s in ("train", "val", "test") if s != other)
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata\.csv: patient 'p0' is in splits \["):
        load_folder(root, 16)


def test_split_hash_is_stable_and_roughly_70_10_20():
    splits = pd.Series([patient_split(f"patient{i:04d}") for i in range(1000)]).value_counts()
    assert 0.6 < splits["train"] / 1000 < 0.8 and 0.05 < splits["val"] / 1000 < 0.15
    assert patient_split("patient0001") == patient_split("patient0001")


def test_read_cine_gives_luma_frames():
    frames, ds = read_cine(examples.get_path("ybr_color"))
    assert frames.shape == (30, 240, 320) and frames.dtype == np.uint8
    rgb = ds.pixel_array[0].astype(float)  # pydicom's own YBR -> RGB conversion
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(frames[0] - luma).mean() < 1.0


def test_import_dicom_writes_loadable_folder(tmp_path):
    out = import_dicom(examples.get_path("ybr_color"), tmp_path / "cine", view="4CH")
    data = load_folder(out, 32)
    assert len(data) == 30 and data.masks is None
    assert set(data.meta["view"]) == {"4CH"} and set(data.meta["phase"]) == {"unknown"}
    assert data.meta["patient"].nunique() == 1
    # Burnt-in text left of the fan ("PLA", top left) is gone; the fan itself is kept.
    raw, _ = read_cine(examples.get_path("ybr_color"))
    frame = read_array(out / data.meta["image"][0])
    assert raw[0, :30, :40].max() > 100 and frame[:30, :40].max() == 0
    assert (frame[100:150, 140:200] == raw[0, 100:150, 140:200]).all()
    with pytest.raises(DataError, match="output folder already exists"):
        import_dicom(examples.get_path("ybr_color"), tmp_path / "cine")


def test_import_dicom_unreadable_file_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom")
    with pytest.raises(DataError, match=r"bad\.dcm: unreadable DICOM"):
        import_dicom(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dcm"]


def test_inspect_folder_and_saved_dataset(tmp_path):
    from benchmark.data.inspect import format_summary, inspect_tree
    from benchmark.data.phantom import make_phantom

    summary = inspect_tree(_folder(tmp_path / "f"))
    assert summary["layout"] == "folder" and (summary["patients"], summary["images"]) == (3, 3)
    assert summary["views"] == {"4CH": 3} and summary["phases"] == {"unknown": 3}
    assert summary["spacing"] == {"images": 0}  # PNG files carry no spacing
    assert "spacing    none (distances in pixels only)" in format_summary(summary)
    make_phantom(3, 16, seed=0).save(tmp_path / "saved")
    summary = inspect_tree(tmp_path / "saved")
    assert summary["layout"] == "echodata" and summary["images"] == 12
    assert summary["spacing"] == {"images": 12, "row_mm": [11.25] * 2, "col_mm": [11.25] * 2}
    assert "spacing    12 of 12 images; row 11.2-11.2 mm, col 11.2-11.2 mm" in format_summary(
        summary
    )
