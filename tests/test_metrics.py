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
    # A run that never learnt (Dice 0 throughout) has not converged in epoch 1.
    assert epochs_to_fraction([0.0, 0.0, 0.0]) is None
    assert convergence([0.0] * 3, [1.0] * 3, 3)["seconds_to_95"] is None
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


def _shifted_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two 6x6 images: LV one column block shifted 2 columns right, LA one row shifted up
    one row, MYO exact."""
    truth = np.zeros((2, 6, 6), np.uint8)
    truth[:, 0:4, 0] = 1
    truth[:, 0:2, 4:6] = 2
    truth[:, 5, 2:5] = 3
    pred = truth.copy()
    pred[:, 0:4, 0], pred[:, 0:4, 2] = 0, 1
    pred[:, 5, 2:5], pred[:, 4, 2:5] = 0, 3
    return pred, truth


def test_distances_in_mm_follow_each_images_row_and_column_spacing():
    pred, truth = _shifted_pair()
    spacing = np.array([[0.5, 0.3], [1.0, 0.1]])  # (row, col) mm per image
    scores = per_sample_scores(pred, truth, with_hd95=True, spacing=spacing)
    # Every surface pixel of a shifted block lies exactly the shift from the other block, so
    # HD95 and ASSD both equal the shift: LV 2 columns, LA 1 row, MYO 0.
    for metric in ("hd95", "assd"):
        assert scores[f"{metric}_lv"].tolist() == pytest.approx([2.0, 2.0])
        assert scores[f"{metric}_la"].tolist() == pytest.approx([1.0, 1.0])
        assert scores[f"{metric}_mm_lv"].tolist() == pytest.approx([2 * 0.3, 2 * 0.1])
        assert scores[f"{metric}_mm_la"].tolist() == pytest.approx([0.5, 1.0])
        assert scores[f"{metric}_mm_myo"].tolist() == pytest.approx([0.0, 0.0])
        assert scores.loc[0, f"{metric}_mm_mean"] == pytest.approx((0.6 + 0 + 0.5) / 3)


def test_epicardium_is_the_cavity_and_myocardium_together_and_stays_out_of_the_mean():
    pred, truth = _shifted_pair()
    scores = per_sample_scores(pred, truth, with_hd95=True)
    # Epicardium: 8 pixels each side (LV column 4 + MYO block 4), the MYO 4 shared.
    assert scores["dice_epi"].tolist() == pytest.approx([0.5, 0.5])
    assert scores["iou_epi"].tolist() == pytest.approx([4 / 12, 4 / 12])
    # The LV part of each edge set lies 2 from the other set, the MYO part 0.
    assert scores["hd95_epi"].tolist() == pytest.approx([2.0, 2.0])
    assert scores["assd_epi"].tolist() == pytest.approx([1.0, 1.0])
    three = scores[["dice_lv", "dice_myo", "dice_la"]].mean(axis=1)
    assert scores["dice_mean"].tolist() == pytest.approx(three.tolist())


def test_a_missed_structure_costs_the_image_diagonal_in_mm_too():
    pred, truth = _shifted_pair()
    pred[pred == 3] = 0
    scores = per_sample_scores(pred, truth, with_hd95=True, spacing=np.array([[0.5, 0.3]] * 2))
    assert scores.loc[0, "hd95_la"] == pytest.approx(math.hypot(6, 6))
    assert scores.loc[0, "hd95_mm_la"] == pytest.approx(math.hypot(6 * 0.5, 6 * 0.3))
    assert scores.loc[0, "assd_mm_la"] == pytest.approx(math.hypot(6 * 0.5, 6 * 0.3))


def test_a_structure_absent_from_both_maps_scores_zero_and_an_invented_one_the_diagonal():
    pred, truth = _shifted_pair()
    pred[pred == 3], truth[truth == 3] = 0, 0  # no atrium anywhere: rightly empty
    scores = per_sample_scores(pred, truth, with_hd95=True)
    assert scores["hd95_la"].tolist() == [0.0, 0.0] and scores["assd_la"].tolist() == [0.0, 0.0]
    pred[0, 5, 5] = 3  # an atrium the reference does not have
    assert per_sample_scores(pred, truth, with_hd95=True).loc[0, "hd95_la"] == pytest.approx(
        math.hypot(6, 6)
    )


def test_binary_distances_of_vlseg_pairs_by_hand():
    from downstream.vlseg import binary_distances

    pred, truth = _shifted_pair()
    # The LV and LA pairs of both images: (P, H, W) binary masks, each pair's own spacing.
    p = np.concatenate([(pred == 1), (pred == 3)]).astype(np.uint8)
    t = np.concatenate([(truth == 1), (truth == 3)]).astype(np.uint8)
    spacing = np.array([[0.5, 0.3], [1.0, 0.1]] * 2)
    out = binary_distances(p, t, spacing)
    assert out["hd95_mean"].tolist() == pytest.approx([2, 2, 1, 1])  # LV 2 columns, LA 1 row
    assert out["assd_mm_mean"].tolist() == pytest.approx([0.6, 0.2, 0.5, 1.0])
    assert set(binary_distances(p, t, None)) == {"hd95_mean", "assd_mean"}
    p[0] = 0  # a missed LV: the image diagonal
    assert binary_distances(p, t, spacing)["hd95_mm_mean"][0] == pytest.approx(
        math.hypot(6 * 0.5, 6 * 0.3)
    )


def test_no_spacing_no_mm_columns():
    pred, truth = _shifted_pair()
    scores = per_sample_scores(pred, truth, with_hd95=True)
    assert "hd95_mean" in scores and "assd_mean" in scores
    assert not any("_mm" in c for c in scores.columns)


def test_single_pass_distances_equal_monais_own_functions():
    import warnings

    from monai.metrics.hausdorff_distance import compute_hausdorff_distance
    from monai.metrics.surface_distance import compute_average_surface_distance

    from benchmark.data.phantom import make_phantom
    from downstream.segmentation import _onehot

    test = make_phantom(6, 48, seed=0)
    pred = np.roll(test.masks, 2, axis=2)  # every structure off by 2 columns
    spacing = test.spacing() * np.array([1.0, 0.6])  # anisotropic
    scores = per_sample_scores(pred, test.masks, with_hd95=True, spacing=spacing)
    per_image = [tuple(row) for row in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, t = _onehot(pred), _onehot(test.masks)
        hd = compute_hausdorff_distance(p, t, percentile=95, spacing=per_image).numpy()
        assd = compute_average_surface_distance(p, t, symmetric=True, spacing=per_image).numpy()
    for j, s in enumerate(("lv", "myo", "la")):
        np.testing.assert_allclose(scores[f"hd95_mm_{s}"], hd[:, j], rtol=1e-6)
        np.testing.assert_allclose(scores[f"assd_mm_{s}"], assd[:, j], rtol=1e-6)
