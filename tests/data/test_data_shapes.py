"""The shape rule on shapes whose answer is known, and the sibling attributes."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from benchmark.data.shapes import component_count, position_word, shape_word, size_word

YY, XX = np.mgrid[:64, :64]


def block(r0, r1, c0, c1):
    m = np.zeros((64, 64), bool)
    m[r0:r1, c0:c1] = True
    return m


@pytest.mark.parametrize(
    "mask, word",
    [
        ((YY - 32) ** 2 + (XX - 32) ** 2 < 15**2, "circle"),
        (((YY - 32) / 22) ** 2 + ((XX - 32) / 10) ** 2 < 1, "oval"),
        (block(10, 40, 10, 40), "square"),
        (block(10, 20, 5, 55), "rectangle"),
        ((YY > 10) & (YY < 50) & (np.abs(XX - 32) < (YY - 10) / 2), "triangle"),
        (
            ndi.rotate(block(10, 40, 10, 40).astype(float), 30, order=0, reshape=False) > 0.5,
            "square",
        ),
        (np.zeros((64, 64), bool), "none"),
    ],
)
def test_shape_word(mask, word):
    assert shape_word(mask) == word


def test_size_position_components():
    assert size_word(block(0, 40, 0, 64)) == "large"  # 0.625
    assert size_word(block(0, 20, 0, 20)) == "medium"  # 0.098
    assert size_word(block(0, 10, 0, 10)) == "small"  # 0.024
    assert size_word(block(0, 1, 0, 2)) == "tiny"  # 0.0005
    assert position_word(block(0, 10, 50, 60)) == "top right"
    assert position_word(block(28, 36, 28, 36)) == "center"
    assert position_word(block(50, 60, 28, 36)) == "bottom center"
    assert component_count(block(0, 5, 0, 5) | block(10, 15, 10, 15)) == 2
    assert component_count(block(0, 5, 0, 5) | block(5, 10, 5, 10)) == 1  # diagonal touch
