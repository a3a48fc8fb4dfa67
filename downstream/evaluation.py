"""What a downstream task's ``evaluate`` returns: its scores on the real test split."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class Evaluation:
    """A trained model tested on real images.

    ``metrics``: means over the test set (the cell's ``test/*`` metrics). ``per_sample``: one
    row per test sample (``sample`` id first, then one column per metric), the input of the
    paired tests. ``per_patient``: segmentation's clinical indices per test patient, predicted
    and reference side by side (``downstream.volumes.agreement``); None where a task has none
    or the test images have no pixel spacing.
    """

    metrics: dict[str, float]
    per_sample: pd.DataFrame
    per_patient: pd.DataFrame | None = None
