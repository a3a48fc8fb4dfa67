"""Text prompts P0-P7 built from image metadata, with SB's exact wording.

Structure prompts (one per image and target structure) follow SB's templates: P0 is empty and
each level adds one attribute (structure, view, phase, sex, age, image quality, shape). Each
level has two variants that differ only in "of the heart" (0) vs "in the cardiac ultrasound"
(1); SB drew one at random per sample. Image prompts (for generators) are built from the same
attributes with "Apical" + view as the subject.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from benchmark.data.records import EchoData
from benchmark.data.shapes import SHAPE_WORDS, shape_word

STRUCTURES = {"LV": "Left ventricular cavity", "MYO": "Myocardium", "LA": "Left atrium cavity"}
STRUCTURE_LABELS = {"LV": 1, "MYO": 2, "LA": 3}
VARIANTS = ("of the heart", "in the cardiac ultrasound")
KINDS = tuple(range(8))
_CHAMBERS = {"2CH": "two", "4CH": "four"}
_CYCLE = {"ED": "diastole", "ES": "systole"}
_SEX = {"F": "female", "M": "male"}
_QUALITY = {"Good": "good", "Medium": "medium", "Poor": "poor"}

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words for 0 <= n < 1000 as num2words writes them (``56`` -> ``fifty-six``,
    ``105`` -> ``one hundred and five``)."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_words handles 0..999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")


def _word(table: dict, meta, key: str) -> str:
    value = meta.get(key)
    if value not in table:
        raise ValueError(f"prompt needs {key} in {sorted(table)}, got {value!r}")
    return table[value]


def _attributes(kind: int, meta) -> dict[str, str]:
    """The words levels 2..min(kind, 6) need; raises on a missing or unknown attribute."""
    words = {}
    if kind >= 2:
        words["chambers"] = _word(_CHAMBERS, meta, "view")
    if kind >= 3:
        words["cycle"] = _word(_CYCLE, meta, "phase")
    if kind >= 4:
        words["sex"] = _word(_SEX, meta, "sex")
    if kind >= 5:
        age = meta.get("age")
        if age is None or pd.isna(age) or int(age) < 0:
            raise ValueError(f"prompt needs a known age, got {age!r}")
        words["age"] = number_words(int(age))
    if kind >= 6:
        words["quality"] = _word(_QUALITY, meta, "quality")
    return words


def _after_view(kind: int, w: dict[str, str], place: str) -> str:
    """Everything after "<chambers>-chamber view" for levels 2..7, with the final period."""
    text = f" {place}"
    if kind >= 3:
        text += f" at end of the {w['cycle']} cycle"
    if kind == 4:
        text += f" of a {w['sex']}"
    if kind >= 5:
        text += f" of a {w['age']}-year-old {w['sex']}"
    if kind >= 6:
        text += f" with {w['quality']} image quality"
    return text + "."


def _check(kind: int, variant: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"prompt kind must be 0..7, got {kind!r}")
    if variant not in (0, 1):
        raise ValueError(f"prompt variant must be 0 or 1, got {variant!r}")
    return VARIANTS[variant]


def structure_prompt(kind: int, meta, structure: str, variant: int = 0) -> str:
    """SB's prompt of level ``kind`` (0-7) for ``structure`` (``LV``, ``MYO``, ``LA``).

    ``meta`` is a mapping (dict or Series) with ``view``, ``phase``, ``sex``, ``age``,
    ``quality`` and, for P7, ``shape_<structure>`` or ``shape``. A structure absent from the
    label map (shape ``"none"``, e.g. in a generated map) is named without a shape: its
    target is empty, and one such map must not stop a whole cell.
    """
    place = _check(kind, variant)
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {list(STRUCTURES)}, got {structure!r}")
    if kind == 0:
        return ""
    name = STRUCTURES[structure]
    if kind == 1:
        return f"{name} {place}."
    w = _attributes(kind, meta)
    if kind == 7:
        shape = meta.get(f"shape_{structure}", meta.get("shape"))
        if not isinstance(shape, str) or not shape:
            raise ValueError(f"P7 needs shape_{structure} (or shape) in the metadata")
        if shape != "none":
            name = f"{name} of {shape} shape"
    return f"{name} in {w['chambers']}-chamber view" + _after_view(kind, w, place)


def image_prompt(kind: int, meta, variant: int = 0) -> str:
    """Image-level prompt for generators, from the same attributes (P0 empty).

    P1 ``Apical view of the heart.``; P2-P6 ``Apical two-chamber view of the heart at end of
    the diastole cycle of a fifty-six-year-old female with good image quality.`` growing as
    in SB; P7 appends ``, with left ventricular cavity of oval shape, myocardium of ...
    shape and left atrium cavity of ... shape.`` from ``shape_LV/MYO/LA``.
    """
    place = _check(kind, variant)
    if kind == 0:
        return ""
    if kind == 1:
        return f"Apical view {place}."
    w = _attributes(kind, meta)
    text = f"Apical {w['chambers']}-chamber view" + _after_view(kind, w, place)
    if kind == 7:
        parts = []
        for structure, name in STRUCTURES.items():
            shape = meta.get(f"shape_{structure}")
            if not isinstance(shape, str) or not shape:
                raise ValueError(f"P7 needs shape_{structure} in the metadata")
            if shape != "none":  # absent from the label map: nothing to describe
                parts.append(f"{name.lower()} of {shape} shape")
        if parts:
            listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
            text = text[:-1] + f", with {listed}."
    return text


def coverage_prompts() -> list[str]:
    """Distinct prompts that together hold every word a prompt of this module can hold:
    every kind, variant and target with every attribute value, and every age (0-999).

    A BERT-style tokenizer splits text into words at spaces and punctuation and each word
    into tokens alone, so these prompts' tokens are every token a prompt can use (the GPU
    kit carries only those rows of the encoder's word embeddings).
    """
    prompts = set()
    targets = (None, *STRUCTURES)
    attributes = itertools.product(_CHAMBERS, _CYCLE, _SEX, _QUALITY, SHAPE_WORDS)
    for (view, phase, sex, quality, shape), kind, variant, target in itertools.product(
        attributes, KINDS[1:], (0, 1), targets
    ):
        meta = {"view": view, "phase": phase, "sex": sex, "quality": quality, "age": 56}
        meta.update({f"shape_{s}": shape for s in STRUCTURES})
        if target is None:
            prompts.add(image_prompt(kind, meta, variant))
        else:
            prompts.add(structure_prompt(kind, meta, target, variant))
    for age in range(1000):
        meta = {"view": "2CH", "phase": "ED", "sex": "F", "quality": "Good", "age": age}
        prompts.add(image_prompt(6, meta))
    return sorted(prompts)


def add_shape_columns(data: EchoData) -> EchoData:
    """Copy of ``data`` with ``shape_LV``, ``shape_MYO``, ``shape_LA`` from its masks."""
    if data.masks is None:
        raise ValueError("shape columns need label maps")
    meta = data.meta.copy()
    for structure, label in STRUCTURE_LABELS.items():
        meta[f"shape_{structure}"] = [shape_word(m == label) for m in data.masks]
    return EchoData(images=data.images, masks=data.masks, meta=meta)


def variants_for(n: int, policy: str, seed: int) -> np.ndarray:
    """``(n,)`` template variants: all 0 (``fixed``) or seeded coin flips (``random``, SB)."""
    if policy == "fixed":
        return np.zeros(n, dtype=int)
    if policy == "random":
        return np.random.default_rng(seed).integers(0, 2, size=n)
    raise ValueError(f"prompt variant policy must be 'fixed' or 'random', got {policy!r}")


def prompts_for(
    data: EchoData,
    kind: int,
    structure: str | None = None,
    policy: str = "fixed",
    seed: int = 0,
) -> list[str]:
    """One prompt per image of ``data``: structure prompts for ``structure``, else image
    prompts. P7 uses the ``shape_*`` columns, computed from the masks if absent."""
    meta = data.meta
    if kind == 7 and not all(f"shape_{s}" in meta.columns for s in STRUCTURES):
        meta = add_shape_columns(data).meta
    variants = variants_for(len(meta), policy, seed)
    rows = meta.to_dict("records")
    if structure is None:
        return [image_prompt(kind, r, int(v)) for r, v in zip(rows, variants)]
    return [structure_prompt(kind, r, structure, int(v)) for r, v in zip(rows, variants)]
