"""Golden prompts for every kind and variant, number words, and whole-dataset helpers."""

import numpy as np
import pytest

from benchmark.data.phantom import make_phantom
from benchmark.prompts import (
    add_shape_columns,
    image_prompt,
    number_words,
    prompts_for,
    structure_prompt,
    variants_for,
)

META = {"view": "4CH", "phase": "ES", "sex": "M", "age": 56, "quality": "Poor", "shape_LA": "oval"}

GOLDEN = {
    0: "",
    1: "Left atrium cavity {place}.",
    2: "Left atrium cavity in four-chamber view {place}.",
    3: "Left atrium cavity in four-chamber view {place} at end of the systole cycle.",
    4: "Left atrium cavity in four-chamber view {place} at end of the systole cycle of a male.",
    5: "Left atrium cavity in four-chamber view {place} at end of the systole cycle of a "
    "fifty-six-year-old male.",
    6: "Left atrium cavity in four-chamber view {place} at end of the systole cycle of a "
    "fifty-six-year-old male with poor image quality.",
    7: "Left atrium cavity of oval shape in four-chamber view {place} at end of the systole "
    "cycle of a fifty-six-year-old male with poor image quality.",
}


@pytest.mark.parametrize("kind", range(8))
@pytest.mark.parametrize("variant", [0, 1])
def test_structure_prompt_golden(kind, variant):
    place = ["of the heart", "in the cardiac ultrasound"][variant]
    assert structure_prompt(kind, META, "LA", variant) == GOLDEN[kind].format(place=place)


def test_structure_names_and_other_values():
    meta = {
        "view": "2CH",
        "phase": "ED",
        "sex": "F",
        "age": 21,
        "quality": "Good",
        "shape": "circle",
    }
    assert structure_prompt(1, meta, "LV") == "Left ventricular cavity of the heart."
    assert structure_prompt(1, meta, "MYO", 1) == "Myocardium in the cardiac ultrasound."
    assert structure_prompt(7, meta, "MYO") == (
        "Myocardium of circle shape in two-chamber view of the heart at end of the diastole "
        "cycle of a twenty-one-year-old female with good image quality."
    )


IMAGE_GOLDEN = {
    0: "",
    1: "Apical view {place}.",
    2: "Apical four-chamber view {place}.",
    3: "Apical four-chamber view {place} at end of the systole cycle.",
    4: "Apical four-chamber view {place} at end of the systole cycle of a male.",
    5: "Apical four-chamber view {place} at end of the systole cycle of a fifty-six-year-old male.",
    6: "Apical four-chamber view {place} at end of the systole cycle of a fifty-six-year-old male "
    "with poor image quality.",
    7: "Apical four-chamber view {place} at end of the systole cycle of a fifty-six-year-old male "
    "with poor image quality, with left ventricular cavity of oval shape, myocardium of "
    "triangle shape and left atrium cavity of circle shape.",
}


@pytest.mark.parametrize("kind", range(8))
@pytest.mark.parametrize("variant", [0, 1])
def test_image_prompt_golden(kind, variant):
    meta = META | {"shape_LV": "oval", "shape_MYO": "triangle", "shape_LA": "circle"}
    place = ["of the heart", "in the cardiac ultrasound"][variant]
    assert image_prompt(kind, meta, variant) == IMAGE_GOLDEN[kind].format(place=place)


def test_p7_names_an_absent_structure_without_a_shape():
    """A label map without the structure (shape "none", e.g. a generated map) gets the
    prompt without the shape phrase; its target is empty. One such map must not fail a cell."""
    meta = META | {"shape_LV": "oval", "shape_MYO": "none", "shape_LA": "circle"}
    assert structure_prompt(7, meta, "MYO") == (
        "Myocardium in four-chamber view of the heart at end of the systole cycle of a "
        "fifty-six-year-old male with poor image quality."
    )
    assert image_prompt(7, meta).endswith(
        "with left ventricular cavity of oval shape and left atrium cavity of circle shape."
    )
    only = meta | {"shape_LV": "none", "shape_LA": "none"}
    assert image_prompt(7, only) == image_prompt(6, only)
    data = make_phantom(3, 32, seed=0)
    data.masks[0][data.masks[0] == 3] = 0  # the first image loses its atrium
    texts = prompts_for(add_shape_columns(data), 7, "LA", "fixed", 0)
    assert texts[0].startswith("Left atrium cavity in ") and " of " in texts[1]


def test_number_words():
    words = {0: "zero", 9: "nine", 13: "thirteen", 20: "twenty", 45: "forty-five", 56: "fifty-six"}
    words |= {80: "eighty", 99: "ninety-nine", 100: "one hundred", 104: "one hundred and four"}
    assert {n: number_words(n) for n in words} == words


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="kind must be 0..7"):
        structure_prompt(8, META, "LV")
    with pytest.raises(ValueError, match="structure must be one of"):
        structure_prompt(1, META, "RV")
    with pytest.raises(ValueError, match="needs view"):
        structure_prompt(2, META | {"view": "unknown"}, "LV")
    with pytest.raises(ValueError, match="P7 needs shape_LV"):
        structure_prompt(7, META, "LV")


def test_dataset_helpers():
    data = make_phantom(3, 32, seed=0)
    shaped = add_shape_columns(data)
    assert {"shape_LV", "shape_MYO", "shape_LA"} <= set(shaped.meta.columns)
    assert "shape_LV" not in data.meta.columns  # the input is not modified
    fixed = prompts_for(data, 7, "LV")
    assert len(fixed) == 12 and all(p.endswith("image quality.") for p in fixed)
    assert all("of the heart" in p for p in fixed)
    rand = prompts_for(data, 3, "LA", policy="random", seed=1)
    assert rand == prompts_for(data, 3, "LA", policy="random", seed=1)
    assert {"of the heart" in p for p in rand} == {True, False}
    assert prompts_for(data, 2)[0].startswith("Apical ")
    v = variants_for(1000, "random", 0)
    assert set(np.unique(v)) == {0, 1} and 400 < v.sum() < 600
