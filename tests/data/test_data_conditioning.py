"""Perturbed conditioning masks: leakage guard, label set, sector, determinism, metadata."""

import numpy as np
import pytest

from benchmark.data.conditioning import LeakageError, perturb_masks
from benchmark.data.phantom import make_phantom, phantom_sector


@pytest.fixture(scope="module")
def train():
    return make_phantom(6, 48, seed=0).split("train")


def test_refuses_validation_and_test_masks():
    data = make_phantom(4, 32, seed=0)
    with pytest.raises(LeakageError, match="training split only; got .*val.*test"):
        perturb_masks(data)
    with pytest.raises(LeakageError):
        perturb_masks(data.split("test"))


def test_perturbed_masks(train):
    cond = perturb_masks(train, copies=3, seed=1)
    assert cond.masks.shape == (3 * len(train), 48, 48) and not cond.images.any()
    assert set(np.unique(cond.masks)) == {0, 1, 2, 3}
    assert not cond.masks[:, ~phantom_sector(48)].any()
    assert (cond.meta["label_source"] == "conditioning").all()
    assert list(cond.meta["copy"][:4]) == [0, 1, 2, 0]
    for col in ("patient", "view", "phase", "sex", "age", "quality", "ef", "split"):
        assert cond.meta[col].tolist() == np.repeat(train.meta[col].to_numpy(), 3).tolist()
    # Perturbed, but still the same anatomy: the LV overlaps its source's LV.
    for k in range(len(cond)):
        a, b = cond.masks[k] == 1, train.masks[cond.meta["parent"][k]] == 1
        assert 0.5 < 2 * (a & b).sum() / (a.sum() + b.sum()) < 1.0
    again = perturb_masks(train, copies=3, seed=1)
    np.testing.assert_array_equal(again.masks, cond.masks)
    assert not np.array_equal(perturb_masks(train, copies=3, seed=2).masks, cond.masks)
