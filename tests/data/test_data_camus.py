"""CAMUS loading: both layouts, orientation, metadata, splits, resizing and broken trees."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from benchmark.data.camus import load_camus, read_cfg, sb_split, write_camus
from benchmark.data.errors import DataError
from benchmark.data.phantom import make_phantom


def _native(root):
    """Load at a size that keeps rows exact: the fixture is 40 x 24, loaded as 40 x 40."""
    return load_camus(root, 40)


@pytest.mark.parametrize("layout", ["nifti", "legacy"])
def test_orientation_alignment_and_order(camus_tree, camus_pair, layout):
    H, W = camus_pair.H, camus_pair.W
    data = load_camus(camus_tree(layout=layout, patients=2), H)
    assert len(data) == 8
    assert list(data.meta["view"]) == ["2CH", "2CH", "4CH", "4CH"] * 2
    assert list(data.meta["phase"]) == ["ED", "ES"] * 4
    for i, row in data.meta.iterrows():
        image, label = camus_pair.pair(int(row["patient"][-4:]), row["view"], row["phase"])
        # Columns were stretched 24 -> 40 by nearest neighbour for the mask.
        cols = np.minimum(((np.arange(H) + 0.5) * W / H).astype(int), W - 1)
        np.testing.assert_array_equal(data.masks[i], label[:, cols])
        # The LV block is in the upper left, the atrium at the bottom right.
        assert data.masks[i][10, 5] == 1 and data.masks[i][32, 35] == 3
        # Image brightness follows the labels (smooth resize, so compare block interiors).
        assert abs(data.images[i][10, 5] - 80 / 255) < 0.02
        assert abs(data.images[i][32, 35] - 200 / 255) < 0.02


def test_both_layouts_load_identically(camus_tree):
    a = _native(camus_tree(layout="nifti", patients=3))
    b = _native(camus_tree(layout="legacy", patients=3))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_metadata_from_cfg_with_crlf_and_unknown_keys(camus_tree):
    data = load_camus(camus_tree(patients=3, newline="\r\n"), 16)
    row = data.meta.iloc[4]  # patient0002
    assert (row["sex"], row["age"], row["quality"]) == ("M", 42, "Poor")
    assert row["ef"] == 54.5 and row["frame_es"] == 12 and row["lv_esv"] == 45.5
    assert set(data.meta["label_source"]) == {"manual"}
    assert set(data.meta["source"]) == {"real"}


def test_nifti_release_ef_key(camus_tree):
    """The NIfTI release's cfg says ``EF``, the legacy one ``LVef``: both give ``ef``."""
    root = camus_tree(patients=1)
    for cfg in root.glob("database_nifti/*/Info_*.cfg"):
        cfg.write_text(cfg.read_text().replace("LVef: 54.5", "EF: 61.25"))
    assert set(load_camus(root, 16).meta["ef"]) == {61.25}


def test_read_cfg_line_endings(tmp_path):
    path = tmp_path / "Info_2CH.cfg"
    for newline in ("\n", "\r\n", "\r"):
        path.write_bytes(newline.join(["Sex: F", "Age: 56", "Odd: a:b", "noise"]).encode())
        assert read_cfg(path) == {"Sex": "F", "Age": "56", "Odd": "a:b"}


def test_official_split_files_are_used(camus_tree):
    lists = {
        "training": ["patient0002", "patient0003"],
        "validation": ["patient0001"],
        "testing": ["patient0004"],
    }
    data = load_camus(camus_tree(patients=4, split_lists=lists), 16)
    split = data.meta.drop_duplicates("patient").set_index("patient")["split"].to_dict()
    assert split == {
        "patient0001": "val",
        "patient0002": "train",
        "patient0003": "train",
        "patient0004": "test",
    }


def test_unlisted_patient_is_an_error(camus_tree):
    lists = {"training": ["patient0001"], "validation": [], "testing": []}
    with pytest.raises(DataError, match="patient0002 is in no split list"):
        load_camus(camus_tree(patients=2, split_lists=lists), 16)


def test_patient_in_two_split_lists_is_an_error(camus_tree):
    lists = {
        "training": ["patient0001", "patient0002"],
        "validation": [],
        "testing": ["patient0002"],
    }
    with pytest.raises(
        DataError,
        match=r"subgroup_testing\.txt: patient0002 is also in "
        r"subgroup_training\.txt",
    ):
        load_camus(camus_tree(patients=2, split_lists=lists), 16)


def test_sb_split_full_size_and_scaled():
    train = [f"patient{i:04d}" for i in range(1, 451)]
    test = [f"testing_patient{i:04d}" for i in range(1, 51)]
    groups = {p: "training" for p in train} | {p: "testing" for p in test}
    split = sb_split(train + test, groups)
    assert [split[f"patient{i:04d}"] for i in (1, 50, 51, 450)] == ["val", "val", "train", "train"]
    assert sum(s == "test" for s in split.values()) == 50
    nifti = [f"patient{i:04d}" for i in range(1, 501)]
    split = sb_split(nifti, {p: "nifti" for p in nifti})
    assert [split[f"patient{i:04d}"] for i in (1, 50, 51, 450, 451, 500)] == [
        "val",
        "val",
        "train",
        "train",
        "test",
        "test",
    ]
    small = [f"patient{i:04d}" for i in range(1, 11)]
    split = sb_split(small, {p: "nifti" for p in small})
    assert sorted(split.values()).count("val") == 1 and list(split.values()).count("test") == 1


def test_legacy_testing_patients_get_distinct_ids(camus_tree):
    data = load_camus(camus_tree(layout="legacy", patients=9, testing=2), 16)
    ids = data.meta.drop_duplicates("patient").set_index("patient")["split"]
    assert ids["testing_patient0001"] == "test" and ids["patient0001"] == "val"
    assert ids.value_counts().to_dict() == {"train": 8, "test": 2, "val": 1}
    assert data.meta["patient"].nunique() == 11


def test_resize_is_smooth_for_images_and_nearest_for_masks(camus_tree):
    data = load_camus(camus_tree(patients=1), 16)
    assert data.images.shape == (4, 16, 16) and data.masks.dtype == np.uint8
    assert set(np.unique(data.masks)) <= {0, 1, 2, 3}
    # A smooth resize creates intermediate grey levels at label edges; nearest never does.
    levels = {round(v * 255) for v in np.unique(data.images)}
    assert len(levels - {20, 80, 140, 200}) > 0


def test_phantom_export_reads_back_identically(tmp_path):
    ph = make_phantom(4, 32, seed=2)
    write_camus(ph, tmp_path / "out")
    back = load_camus(tmp_path / "out", 32)
    np.testing.assert_array_equal(back.images, ph.images)
    np.testing.assert_array_equal(back.masks, ph.masks)
    assert back.meta[list(ph.meta.columns)].equals(ph.meta)


# ----------------------------------------------------------------------------- broken trees
def _first(root, pattern):
    return sorted(root.rglob(pattern))[0]


def test_truncated_file(camus_tree):
    root = camus_tree(patients=1)
    path = _first(root, "*_4CH_ES.nii.gz")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"patient0001_4CH_ES\.nii\.gz: unreadable or truncated"):
        load_camus(root, 16)


def test_missing_label_map(camus_tree):
    root = camus_tree(layout="legacy", patients=1)
    _first(root, "*_2CH_ED_gt.mhd").unlink()
    with pytest.raises(DataError, match=r"patient0001_2CH_ED_gt\.mhd: missing label map"):
        load_camus(root, 16)


def test_label_values_outside_range(camus_tree, camus_pair):
    root = camus_tree(patients=1)
    path = _first(root, "*_2CH_ES_gt.nii.gz")
    label = camus_pair.pair(1, "2CH", "ES")[1]
    label[0, 0] = 7
    nib.save(nib.Nifti1Image(np.ascontiguousarray(label.T), np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"_2CH_ES_gt\.nii\.gz: label values outside 0-3: 7"):
        load_camus(root, 16)


def test_shape_mismatch(camus_tree, camus_pair):
    root = camus_tree(patients=1)
    path = _first(root, "*_4CH_ED_gt.nii.gz")
    # A label map stored without the release's transpose no longer matches its image.
    nib.save(nib.Nifti1Image(camus_pair.pair(1, "4CH", "ED")[1], np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"_4CH_ED_gt\.nii\.gz: label shape \(24, 40\) does not"):
        load_camus(root, 16)


def test_missing_cfg_and_empty_tree(camus_tree, tmp_path):
    root = camus_tree(patients=2)
    _first(root, "Info_4CH.cfg").unlink()
    with pytest.raises(DataError, match=r"Info_4CH\.cfg: missing metadata file"):
        load_camus(root, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CAMUS patients found"):
        load_camus(tmp_path / "empty", 16)


def test_gzip_corruption_names_file(camus_tree):
    root = camus_tree(patients=1)
    path = _first(root, "*_2CH_ED.nii.gz")
    data = bytearray(gzip.decompress(path.read_bytes()))
    path.write_bytes(gzip.compress(bytes(data[:-100])))  # a valid gzip of a short NIfTI
    with pytest.raises(DataError, match=r"_2CH_ED\.nii\.gz: unreadable or truncated"):
        load_camus(root, 16)


def test_load_real_dispatches_and_checks_root(camus_tree, tmp_path):
    from benchmark.data.config import DataConfig
    from benchmark.data.sources import check_source, load_real

    root = camus_tree(patients=3)
    cfg = DataConfig(source="camus", root=str(root), size=16)
    check_source(cfg)
    assert len(load_real(cfg)) == 12
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CAMUS patients found"):
        check_source(DataConfig(source="camus", root=str(tmp_path / "empty")))
    with pytest.raises(DataError, match=r"metadata\.csv: missing metadata file"):
        check_source(DataConfig(source="folder", root=str(tmp_path / "empty")))
