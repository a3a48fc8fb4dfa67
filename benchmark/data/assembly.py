"""Assembling a training set: the real fraction by patient, then synthetic images at a ratio."""

from __future__ import annotations

import numpy as np

from benchmark.data.records import EchoData


def select_real_fraction(train: EchoData, fraction: float, seed: int) -> EchoData:
    """Keep a seeded random ``fraction`` of the training *patients* (never single images).

    At least one patient is always kept so that a tiny fraction of a tiny set still trains.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"real fraction must be in (0, 1], got {fraction}")
    patients = np.array(sorted(train.meta["patient"].astype(str).unique()))
    if fraction == 1 or len(patients) == 0:
        return train
    n_keep = max(1, int(round(fraction * len(patients))))
    rng = np.random.default_rng(seed)
    keep = set(rng.choice(patients, size=n_keep, replace=False))
    return train.subset(train.meta["patient"].astype(str).isin(keep).to_numpy())


def take_synthetic(synthetic: EchoData, n_real: int, ratio: float, seed: int) -> EchoData:
    """``round(ratio * n_real)`` synthetic images drawn without replacement (seeded).

    Raises if the synthetic set is too small: silently using fewer images would change the
    ratio the cell claims to measure.
    """
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    n = int(round(ratio * n_real))
    if n > len(synthetic):
        raise ValueError(
            f"ratio {ratio} needs {n} synthetic images but the synthetic set has {len(synthetic)}"
        )
    rng = np.random.default_rng(seed)
    return synthetic.subset(np.sort(rng.choice(len(synthetic), size=n, replace=False)))
