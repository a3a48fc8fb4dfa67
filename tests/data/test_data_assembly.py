"""Assembling a training set (benchmark/data/assembly.py): the real fraction by patient, the
synthetic images at a ratio."""

import numpy as np
import pytest

from benchmark.data.assembly import select_real_fraction, take_synthetic
from benchmark.data.phantom import make_phantom


@pytest.fixture(scope="module")
def train():
    return make_phantom(20, 16, seed=0).split("train")  # 14 patients, 4 images each


@pytest.mark.parametrize(("fraction", "patients"), [(0.1, 1), (0.25, 4), (0.5, 7), (1.0, 14)])
def test_the_real_fraction_keeps_whole_patients(train, fraction, patients):
    per_patient = train.meta.groupby("patient").size()
    kept = select_real_fraction(train, fraction, seed=3)
    counts = kept.meta.groupby("patient").size()
    # round(fraction x patients), each with every one of its images.
    assert len(counts) == patients == max(1, round(fraction * len(per_patient)))
    assert all(counts[p] == per_patient[p] for p in counts.index)
    assert len(kept) == sum(per_patient[p] for p in counts.index)
    again = select_real_fraction(train, fraction, seed=3)
    assert again.meta["patient"].tolist() == kept.meta["patient"].tolist()  # seeded


def test_other_seeds_keep_other_patients_and_bad_fractions_are_refused(train):
    picks = {
        tuple(sorted(select_real_fraction(train, 0.25, seed).meta["patient"].unique()))
        for seed in range(6)
    }
    assert len(picks) > 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="real fraction must be in"):
            select_real_fraction(train, bad, seed=0)


def test_synthetic_images_follow_the_ratio(train):
    synthetic = make_phantom(10, 16, seed=1)  # 40 images
    taken = take_synthetic(synthetic, n_real=12, ratio=2.5, seed=0)
    assert len(taken) == 30 and len(np.unique(taken.sample_ids())) == 30  # no repeats
    assert len(take_synthetic(synthetic, n_real=12, ratio=0, seed=0)) == 0
    with pytest.raises(ValueError, match="needs 48 synthetic images but the synthetic set has 40"):
        take_synthetic(synthetic, n_real=12, ratio=4, seed=0)
