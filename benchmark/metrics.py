"""Metrics that need no model: convergence of a validation curve.

SB and DE both claimed faster convergence without defining it. Here it is defined on the
per-epoch validation curve of the primary metric (higher is better):

- ``epochs_to_95``: the first epoch (1-based) whose score reaches 95 % of the run's best;
  None when the best is not above 0 (a run that never learnt has nothing to converge to).
  It says how fast a run reached its own plateau, not whether that plateau is good: the
  report's speed-up measures the epochs to the real-only baseline's score instead.
- ``seconds_to_95``: wall-clock training time up to the end of that epoch.
- ``val_auc``: the area under the running-best validation curve with epochs normalised to
  [0, 1] over the *epoch budget* (not the epochs actually run), i.e. the mean of the
  best-so-far score over budget epochs; after early stopping the best score is held.
  A run that learns sooner has a larger ``val_auc``; its maximum is the best score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def epochs_to_fraction(curve: Sequence[float], fraction: float = 0.95) -> int | None:
    """First 1-based epoch with ``score >= fraction * max(curve)``; None for an empty curve
    or one whose best is not above 0 (a dead run would otherwise converge in epoch 1)."""
    finite = [v for v in curve if math.isfinite(v)]
    if not finite or max(finite) <= 0:
        return None
    target = fraction * max(finite)
    return next(i for i, v in enumerate(curve, start=1) if math.isfinite(v) and v >= target)


def seconds_to_epoch(epoch_seconds: Sequence[float], epoch: int | None) -> float | None:
    """Cumulative seconds of epochs 1..``epoch``."""
    return None if epoch is None else float(sum(epoch_seconds[:epoch]))


def running_best_auc(curve: Sequence[float], budget: int) -> float:
    """Mean over ``budget`` epochs of the best-so-far score (held after the curve ends)."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    best, total = 0.0, 0.0
    for epoch in range(budget):
        if epoch < len(curve) and math.isfinite(curve[epoch]):
            best = max(best, curve[epoch])
        total += best
    return total / budget


def convergence(
    curve: Sequence[float], epoch_seconds: Sequence[float], budget: int
) -> dict[str, float | None]:
    """``epochs_to_95``, ``seconds_to_95`` and ``val_auc`` of one validation curve."""
    e95 = epochs_to_fraction(curve, 0.95)
    return {
        "epochs_to_95": e95,
        "seconds_to_95": seconds_to_epoch(epoch_seconds, e95),
        "val_auc": running_best_auc(curve, budget),
    }
