import math

import numpy as np
import pytest

from benchmark.metrics import convergence, epochs_to_fraction, running_best_auc
from downstream.segmentation import per_sample_scores


def test_convergence_by_hand():
    curve = [0.2, 0.5, 0.9, 0.96, 1.0]
    # 95 % of the best (1.0) is first reached at epoch 4 (0.96)
    assert epochs_to_fraction(curve) == 4
    out = convergence(curve, [1.0, 2.0, 3.0, 4.0, 5.0], budget=10)
    assert out["epochs_to_95"] == 4 and out["seconds_to_95"] == 10.0
    # running best over 10 budget epochs: 0.2+0.5+0.9+0.96+1*6 = 8.56
    assert out["val_auc"] == pytest.approx(0.856)


def test_running_best_holds_after_a_drop_and_ignores_nan():
    assert running_best_auc([0.5, 0.1, float("nan")], budget=4) == pytest.approx(0.5)
    assert epochs_to_fraction([]) is None
    assert epochs_to_fraction([float("nan"), 0.3]) == 2
    with pytest.raises(ValueError):
        running_best_auc([0.1], budget=0)


def test_segmentation_scores_by_hand():
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[:, 0, :2] = 1  # LV: 2 px
    truth[:, 1, :] = 2  # MYO: 4 px
    truth[:, 3, 0] = 3  # LA: 1 px
    pred = truth.copy()
    pred[1, 0, 1] = 0  # sample 1: LV loses 1 of 2 px -> Dice 2*1/(1+2) = 2/3, IoU 1/2
    pred[1, 3, 0] = 0  # LA missed entirely -> Dice 0, HD95 = image diagonal
    scores = per_sample_scores(pred, truth, with_hd95=True)
    assert scores.loc[0, "dice_mean"] == pytest.approx(1.0)
    assert scores.loc[0, "hd95_mean"] == pytest.approx(0.0)
    assert scores.loc[1, "dice_lv"] == pytest.approx(2 / 3)
    assert scores.loc[1, "iou_lv"] == pytest.approx(0.5)
    assert scores.loc[1, "dice_myo"] == pytest.approx(1.0)
    assert scores.loc[1, "dice_la"] == pytest.approx(0.0)
    assert scores.loc[1, "dice_mean"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert scores.loc[1, "hd95_la"] == pytest.approx(math.hypot(4, 4))
    # LV surface distances truth->pred are {0, 1}; the 95th percentile (linear) is 0.95
    assert scores.loc[1, "hd95_lv"] == pytest.approx(0.95)
