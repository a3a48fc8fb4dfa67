"""The echo phantom: shapes, labels, determinism, splits and the effect of each attribute."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from benchmark.data.appearance import grain_size
from benchmark.data.config import DataConfig
from benchmark.data.errors import DataError
from benchmark.data.phantom import make_phantom
from benchmark.data.records import META_COLUMNS
from benchmark.data.sources import load_real


@pytest.fixture(scope="module")
def ph():
    return make_phantom(10, 64, seed=3)


def test_shapes_labels_and_meta(ph):
    assert ph.images.shape == (40, 64, 64) and ph.images.dtype == np.float32
    assert ph.masks.shape == (40, 64, 64) and ph.masks.dtype == np.uint8
    assert 0 <= ph.images.min() and ph.images.max() <= 1
    assert set(np.unique(ph.masks)) == {0, 1, 2, 3}
    assert all(c in ph.meta.columns for c in META_COLUMNS)
    assert ph.meta["patient"].nunique() == 10
    assert (ph.meta.groupby("patient").size() == 4).all()
    assert set(ph.meta["source"]) == {"real"} and set(ph.meta["label_source"]) == {"phantom"}
    assert ph.meta["ef"].between(30, 75).all()
    # Every image shows all three structures.
    for m in ph.masks:
        assert {1, 2, 3} <= set(np.unique(m))


def test_patient_does_not_depend_on_batch():
    a = make_phantom(5, 32, seed=1)
    b = make_phantom(2, 32, seed=1, first_patient=3)
    np.testing.assert_array_equal(a.images[12:], b.images)
    np.testing.assert_array_equal(a.masks[12:], b.masks)
    assert list(b.meta["patient"].unique()) == ["patient0004", "patient0005"]
    c = make_phantom(2, 32, seed=2, first_patient=3)
    assert not np.array_equal(b.images, c.images)


def test_splits_by_patient_and_non_empty():
    for n in (3, 4, 10, 31):
        meta = make_phantom(n, 16, seed=0).meta
        per_patient = meta.groupby("patient")["split"].nunique()
        assert (per_patient == 1).all()
        assert set(meta["split"]) == {"train", "val", "test"}
    meta = make_phantom(40, 16, seed=0).meta.drop_duplicates("patient")
    assert meta["split"].value_counts().to_dict() == {"train": 28, "test": 8, "val": 4}


def test_es_smaller_than_ed_and_atrium_larger(ph):
    lv = (ph.masks == 1).sum((1, 2))
    la = (ph.masks == 3).sum((1, 2))
    ed = (ph.meta["phase"] == "ED").to_numpy()
    assert (lv[ed] > lv[~ed]).all()
    assert (la[ed] < la[~ed]).all()


def test_load_real_phantom_and_missing_root(tmp_path):
    data = load_real(DataConfig(source="phantom", size=32, phantom_patients=3, phantom_seed=5))
    assert len(data) == 12 and data.images.shape[1:] == (32, 32)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere: data root does not exist"):
        load_real(DataConfig(source="camus", root=str(missing)))


@pytest.fixture(scope="module")
def population():
    return make_phantom(60, 32, seed=11)


def _area(data, label):
    return (data.masks == label).sum((1, 2)).astype(float)


def test_sex_and_age_change_anatomy(population):
    meta = population.meta
    ed = (meta["phase"] == "ED").to_numpy()
    lv = _area(population, 1)
    male = (meta["sex"] == "M").to_numpy()
    assert lv[ed & male].mean() > 1.1 * lv[ed & ~male].mean()
    myo, la = _area(population, 2), _area(population, 3)
    assert np.corrcoef(meta["age"][ed], myo[ed])[0, 1] > 0.2
    assert np.corrcoef(meta["age"][ed], la[ed])[0, 1] > 0.2


def test_quality_degrades_the_image(population):
    # Noise and haze fill the blood pool: brighter cavities as quality drops.
    cavity = np.array([img[m == 1].mean() for img, m in zip(population.images, population.masks)])
    by_quality = {
        q: cavity[(population.meta["quality"] == q).to_numpy()].mean()
        for q in ("Good", "Medium", "Poor")
    }
    assert by_quality["Good"] < by_quality["Medium"] < by_quality["Poor"]


def test_speckle_is_grainy_log_rayleigh():
    # Fully developed speckle has a log-Rayleigh envelope: 5.6 dB standard deviation whatever
    # the echogenicity, i.e. 5.6 / 50 = 0.11 on the display scale, with a grain of several
    # pixels from the PSF. Additive pixel noise would give neither.
    data = make_phantom(6, 256, seed=0)
    good = (data.meta["quality"] == "Good").to_numpy()
    core = np.stack([ndi.binary_erosion(m == 2, iterations=4) for m in data.masks[good]])
    assert 0.07 < data.images[good][core].std() < 0.14
    grain = grain_size(data.images[good], data.masks[good] > 0)
    assert grain["axial"] > 3 and grain["lateral"] > 2.5
