"""The vocabulary of the report: how axes and metrics are named, ordered and printed, which
metrics are lower-is-better, the fidelity columns, and which runs count (the tables and
the figures share it)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

BASELINE_LABEL = "real only"

# Lower-is-better metrics, matched as whole name parts so that e.g. `f1_macro` never hits `fd`.
_LOWER_PARTS = re.compile(r"(^|[/_])(hd95|hd|asd|assd|mae|fd|fid|kid|loss)($|[/_])")
_LOWER_NAMES = {"epochs_to_95", "seconds_to_95", "train_seconds", "copy_share", "intensity_w1"}

# Display order of categorical axes; anything else sorts after, naturally.
_ORDER = {
    "mode": ["none", "unconditional", "text", "semantic", "hybrid", "oracle", "corrupted"],
    "protocol": ["mix", "pretrain", "synthetic_only"],
}
_NUMERIC_AXES = {"ratio", "real_fraction", "seed"}
# The axes that make a cell. A cell key names the seed too (`...-s0`), so grouping or counting
# by key takes each seed's run for a cell of its own.
CELL_AXES = ("task", "model", "real_fraction", "protocol", "mode", "ratio", "prompt")
FIDELITY_COLUMNS = {
    # The standard FID and KID (InceptionV3 features), where the sweep had the weights.
    "fid": "FID",
    "kid_inception": "KID (Inc.)",
    "fd": "FD",
    "kid": "KID",
    "precision": "precision",
    "recall": "recall",
    "cond_view_phase_acc": "view-phase acc.",
    "cond_view_acc": "view acc.",  # phase acc. is logged but left out: tables are wide
    "cond_quality_acc": "quality acc.",
    "mask_dice_mean": "mask Dice",
    "mask_dice": "mask Dice",  # the name before per-structure mask alignment was logged
}
# Mask alignment per structure: columns of the fidelity table (not of the figures, which
# plot the mean only).
MASK_DICE_COLUMNS = {
    "mask_dice_lv": "mask Dice LV",
    "mask_dice_myo": "mask Dice MYO",
    "mask_dice_la": "mask Dice LA",
}
# Copies of the generator's training images: a column of the fidelity table (not of the
# figures: a replayed set is told by the table, and its score by the downstream tables).
COPY_COLUMNS = {"copy_share": "copies"}
# Grey-level histogram distance: a column of the fidelity table, what FD cannot see (the
# encoder normalises brightness away).
INTENSITY_COLUMNS = {"intensity_w1": "intensity W1"}
# The real-image reference of each fidelity column, the fidelity table's first row (the
# same value in every run of a dataset): for the distribution metrics the floor, a second
# real sample (the validation split) against the same reference; for the judged ones the
# judge's score on the real test images.
FIDELITY_REFERENCES = {
    "fid": "fid_floor",
    "kid_inception": "kid_inception_floor",
    "fd": "fd_floor",
    "kid": "kid_floor",
    "precision": "precision_floor",
    "recall": "recall_floor",
    "intensity_w1": "intensity_w1_floor",
    "copy_share": "copy_share_real",
    "cond_view_phase_acc": "cond_view_phase_acc_real",
    "cond_view_acc": "cond_view_acc_real",
    "cond_quality_acc": "cond_quality_acc_real",
    "mask_dice_mean": "mask_dice_real",
    "mask_dice": "mask_dice_real",
    "mask_dice_lv": "mask_dice_real_lv",
    "mask_dice_myo": "mask_dice_real_myo",
    "mask_dice_la": "mask_dice_real_la",
}
REFERENCE_LABEL = "real images"
# KID is an unbiased estimate of a squared distance: values below 0 are noise about 0, and
# rank as 0 (a tie), not as better than 0.
RANK_FLOORS = {"kid": 0.0, "kid_inception": 0.0}
# The real-trained judges whose recipe params the caption names: param prefix -> judge.
JUDGES = {"recipe.segmenter": "segmenter", "recipe.quality_classifier": "quality classifier"}
RECIPE_FIELDS = {
    "recipe.extractor": "extractor",
    "recipe.weights_sha256": "weights SHA-256",
    "recipe.resolution": "resolution",
    "recipe.n": "N",
    "recipe.reference_split": "reference split",
    "recipe.n_floor": "floor N",
    "recipe.inception_sha256": "Inception SHA-256",
}


def is_higher_better(metric: str) -> bool:
    """Direction of a metric by name: distances (hd95, FD, KID), errors (MAE), losses and times
    are lower."""
    name = metric.lower().removeprefix("test/")
    return not (name in _LOWER_NAMES or _LOWER_PARTS.search(name))


def axis_value(axis: str, value: object) -> str:
    """An axis value as printed in a header (floats without trailing zeros)."""
    if axis in _NUMERIC_AXES and isinstance(value, int | float | np.number) and pd.notna(value):
        return f"{value:g}"
    return str(value)


def label_value(axis: str, value: object) -> str:
    """An axis value inside a composite row label, where a bare number would be ambiguous."""
    text = axis_value(axis, value)
    return {"ratio": f"ratio {text}", "real_fraction": f"real {text}"}.get(axis, text)


def sort_key(axis: str, value: object) -> tuple:
    if axis in _ORDER:
        order = _ORDER[axis]
        return (order.index(value) if value in order else len(order), str(value))
    if axis in _NUMERIC_AXES:
        return (0, float(value))
    # Natural order, so that P2 < P10 and "-" (no prompt) comes first.
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", str(value)))


def display_order(axis: str, values: Iterable) -> list:
    """The distinct `values` of `axis` in the order the tables show them (figures reuse it)."""
    return sorted(pd.unique(pd.Series(list(values), dtype=object)), key=lambda v: sort_key(axis, v))


def sort_keys(values: pd.Series, axis: str) -> list:
    """Sort keys of `values`: a categorical's own order, else the axis' display order."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return list(values.cat.codes)
    return [sort_key(axis, v) for v in values]


def usable_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs with status ok; of a cell logged more than once for one seed, the latest run."""
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    if {"start_time", "cell_key", "seed"} <= set(df.columns):
        df = df.sort_values("start_time").drop_duplicates(["cell_key", "seed"], keep="last")
    return df


def cell_ids(runs: pd.DataFrame) -> pd.Series:
    """A number per run naming its cell (`CELL_AXES` without the seed): the runs of one
    cell's seeds share it."""
    axes = [a for a in CELL_AXES if a in runs.columns]
    return runs.groupby(axes, sort=False, dropna=False).ngroup()


def slug(*parts: object) -> str:
    # No dots: LaTeX's \input would take everything after one for a file extension.
    text = "-".join(axis_value("ratio", p) if isinstance(p, float) else str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9-]+", "-", text.replace(".", "p")).strip("-")
