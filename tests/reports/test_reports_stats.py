"""reports.stats: Holm by hand, Wilcoxon pairing and edge cases, summaries, baseline matching."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from reports.stats import (
    bootstrap_mean_ci,
    compare_to_baseline,
    holm,
    image_samples,
    match_baselines,
    paired_wilcoxon,
    patient_samples,
    summarise,
)


def test_holm_matches_hand_computation():
    # Sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> raised to 0.06 (monotone).
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan():
    adjusted = holm([0.6, np.nan, 0.2])
    # m = 2 (the NaN is no test): 0.2*2=0.4, 0.6*1=0.6.
    np.testing.assert_allclose(adjusted, [0.6, np.nan, 0.4])
    assert holm([0.7, 0.8])[0] == 1.0
    assert holm([]).size == 0


def test_wilcoxon_pairs_by_sample_id_not_position():
    rng = np.random.default_rng(1)
    ids = [f"s{i}" for i in range(12)]
    base = pd.Series(rng.normal(0.8, 0.05, 12), index=ids)
    cell = base + np.linspace(0.01, 0.02, 12)  # every sample improves
    shuffled = cell.sample(frac=1.0, random_state=0)
    extra = pd.concat([shuffled, pd.Series([5.0], index=["only_in_cell"])])
    res = paired_wilcoxon(extra, base)
    assert res.n_pairs == 12
    assert res.direction == 1
    assert res.p_value == pytest.approx(wilcoxon((cell - base).to_numpy()).pvalue)
    assert res.p_value < 0.001


def test_wilcoxon_all_zero_differences_gives_p_one():
    s = pd.Series(np.linspace(0, 1, 10), index=[f"s{i}" for i in range(10)])
    res = paired_wilcoxon(s, s.copy())
    assert res.p_value == 1.0 and res.direction == 0 and res.n_pairs == 10


def test_wilcoxon_too_few_pairs_is_not_tested():
    a = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"])
    res = paired_wilcoxon(a + 1, a)
    assert res.n_pairs == 3 and np.isnan(res.p_value)


def test_wilcoxon_drops_non_finite_pairs():
    ids = [f"s{i}" for i in range(8)]
    base = pd.Series(np.arange(8.0), index=ids)
    cell = (base + 1).astype(float)
    cell["s0"] = np.inf  # e.g. HD95 of an empty prediction
    assert paired_wilcoxon(cell, base).n_pairs == 7


def test_summarise_mean_std_n():
    df = pd.DataFrame({"g": ["a", "a", "a", "b"], "m": [1.0, 2.0, 3.0, 5.0]})
    out = summarise(df, "g", "m").set_index("g")
    assert out.loc["a", "mean"] == 2.0
    assert out.loc["a", "std"] == pytest.approx(1.0)  # ddof=1
    assert out.loc["a", "n"] == 3
    # One value: no spread to report, so NaN rather than a misleading 0.
    assert np.isnan(out.loc["b", "std"]) and out.loc["b", "n"] == 1


def _run(run_id, mode, seed, prompt="-", task="seg", protocol="mix"):
    return dict(
        run_id=run_id,
        cell_key=f"{mode}-{prompt}-{protocol}",
        task=task,
        mode=mode,
        prompt=prompt,
        ratio=0.0 if mode == "none" else 1.0,
        protocol=protocol,
        real_fraction=1.0,
        seed=seed,
        model="m",
    )


def test_match_baselines_pairs_seed_and_vlseg_prompt():
    runs = pd.DataFrame(
        [
            _run("b0", "none", 0),
            _run("b1", "none", 1),
            _run("c0", "text", 0),
            _run("c1", "text", 1),
            _run("c2", "text", 2),  # no baseline for seed 2
            _run("vb1", "none", 0, prompt="P1", task="vlseg"),
            _run("vb2", "none", 0, prompt="P2", task="vlseg"),
            _run("vc2", "semantic", 0, prompt="P2", task="vlseg", protocol="pretrain"),
        ]
    )
    pairs = dict(match_baselines(runs).itertuples(index=False))
    assert pairs == {"c0": "b0", "c1": "b1", "vc2": "vb2"}


def test_compare_averages_seeds_before_pairing():
    runs = pd.DataFrame([_run("b0", "none", 0), _run("b1", "none", 1)])
    runs = pd.concat([runs, pd.DataFrame([_run("c0", "text", 0), _run("c1", "text", 1)])])
    samples = [f"s{i}" for i in range(10)]
    rows = []
    for run_id, offset in [("b0", 0.0), ("b1", 0.2), ("c0", 0.3), ("c1", 0.3)]:
        rows += [
            dict(run_id=run_id, sample=s, metric="dice", value=i + offset)
            for i, s in enumerate(samples)
        ]
    per_sample = pd.DataFrame(rows)
    out = compare_to_baseline(runs, per_sample, "mode", "dice")
    row = out.set_index("mode").loc["text"]
    # Seed means: cell i+0.3, baseline i+0.1 -> 10 pairs, all +0.2.
    assert row["n_pairs"] == 10 and row["n_seeds"] == 2
    assert row["median_diff"] == pytest.approx(0.2)
    assert row["direction"] == 1 and row["p_holm"] < 0.01


def test_vlseg_pairs_images_not_structures_and_tests_each_structure():
    # vlseg scores each image once per structure (sample `<image>_<structure>`); the cell
    # gains 0.1 on LV, 0.2 on MYO and 0.3 on LA of each of 8 images.
    runs = pd.DataFrame(
        [
            _run("b0", "none", 0, prompt="P1", task="vlseg"),
            _run("c0", "text", 0, prompt="P1", task="vlseg"),
        ]
    )
    gains = {"LV": 0.1, "MYO": 0.2, "LA": 0.3}
    rows = [
        dict(
            run_id=run_id,
            sample=f"patient{i}_4CH_ED_{structure}",
            metric="dice_mean",
            value=0.5 + 0.01 * i + (run_id == "c0") * gain,
        )
        for run_id in ("b0", "c0")
        for i in range(8)
        for structure, gain in gains.items()
    ]
    per_sample = pd.DataFrame(rows)
    tests = {
        metric: compare_to_baseline(runs, per_sample, "mode", metric).iloc[0]
        for metric in ("dice_mean", "dice_lv", "dice_myo", "dice_la")
    }
    # One pair per image: the mean over its three structures, or the structure's own Dice.
    assert {m: t["n_pairs"] for m, t in tests.items()} == dict.fromkeys(tests, 8)
    medians = {m: t["median_diff"] for m, t in tests.items()}
    assert medians == pytest.approx(
        {"dice_mean": 0.2, "dice_lv": 0.1, "dice_myo": 0.2, "dice_la": 0.3}
    )


def test_patient_unit_pairs_the_mean_of_each_patients_images():
    # 8 patients x 4 images (2 views x 2 phases). The cell gains 0.04 on each image of
    # patients 0-5 and loses 0.01 on the 2CH images of patients 6 and 7 (their 4CH unchanged).
    runs = pd.DataFrame([_run("b0", "none", 0), _run("c0", "text", 0)])
    rows = []
    for i in range(8):
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                gain = 0.04 if i < 6 else (-0.01 if view == "2CH" else 0.0)
                for run_id, value in (("b0", 0.5 + 0.01 * i), ("c0", 0.5 + 0.01 * i + gain)):
                    sample = f"patient{i:04d}_{view}_{phase}"
                    rows.append(dict(run_id=run_id, sample=sample, metric="dice", value=value))
    # A clinical index, one row per patient (`patient_errors`): the patient already.
    for i in range(8):
        for run_id, value in (("b0", 5.0), ("c0", 4.0 + 0.1 * i)):
            rows.append(dict(run_id=run_id, sample=f"patient{i:04d}", metric="ef_mae", value=value))
    per_sample = pd.DataFrame(rows)

    image = compare_to_baseline(runs, per_sample, "mode", "dice").iloc[0]
    patient = compare_to_baseline(runs, per_sample, "mode", "dice", test_unit="patient").iloc[0]
    assert image["n_pairs"] == 32 and patient["n_pairs"] == 8
    # Per image: 24 differences of +0.04, 4 of -0.01, 4 zero (dropped); per patient: six of
    # +0.04 and two of -0.005 (the mean of -0.01, -0.01, 0, 0).
    expected = wilcoxon(np.r_[np.full(6, 0.04), np.full(2, -0.005)]).pvalue
    assert patient["p_value"] == pytest.approx(expected)
    assert patient["median_diff"] == pytest.approx(0.04)
    # Fewer, honest pairs: the same effect is far less certain than 32 images made it look.
    assert image["p_value"] < 1e-5 < 0.01 < patient["p_value"]
    ef = compare_to_baseline(runs, per_sample, "mode", "ef_mae", test_unit="patient").iloc[0]
    assert ef["n_pairs"] == 8 and ef["median_diff"] == pytest.approx(-0.65)
    with pytest.raises(ValueError, match="test_unit must be one of image, patient, not 'subject'"):
        compare_to_baseline(runs, per_sample, "mode", "dice", test_unit="subject")


def test_patient_samples_after_image_samples_for_vlseg():
    """vlseg's (image, structure) rows become images, then patients."""
    rows = [
        dict(run_id="r", sample=f"p1_{view}_ES_{s}", metric="dice_mean", value=v)
        for view, base in (("2CH", 0.5), ("4CH", 0.7))
        for s, v in (("LV", base), ("MYO", base + 0.1), ("LA", base + 0.2))
    ]
    runs = pd.DataFrame([_run("r", "text", 0, prompt="P1", task="vlseg")])
    images = image_samples(runs, pd.DataFrame(rows))
    out = patient_samples(images).set_index(["sample", "metric"])["value"]
    assert out["p1", "dice_mean"] == pytest.approx(0.7)  # (0.6 + 0.8) / 2
    assert out["p1", "dice_lv"] == pytest.approx(0.6)  # (0.5 + 0.7) / 2
    assert out["p1", "dice_la"] == pytest.approx(0.8)


def test_bootstrap_interval_of_the_mean_difference():
    # One value repeated: every resample has that mean.
    assert bootstrap_mean_ci(np.full(10, 0.05)) == pytest.approx((0.05, 0.05))
    # Large n: the percentile interval is the normal one, mean +- 1.96 sd / sqrt(n).
    d = np.random.default_rng(3).normal(0.02, 0.1, size=400)
    low, high = bootstrap_mean_ci(d)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    assert low == pytest.approx(d.mean() - half, abs=0.05 * half)
    assert high == pytest.approx(d.mean() + half, abs=0.05 * half)
    assert bootstrap_mean_ci(d) == (low, high)  # seeded: a report is made the same every time
    assert np.isnan(bootstrap_mean_ci(np.array([]))).all()
    # A test carries it; a pair too few for a test has none.
    idx = [f"s{i}" for i in range(8)]
    res = paired_wilcoxon(pd.Series(np.arange(8.0) + 1, idx), pd.Series(np.zeros(8), idx))
    assert res.mean_diff == 4.5 and res.median_diff == 4.5
    assert 1 < res.ci_low < 4.5 < res.ci_high < 8
    few = paired_wilcoxon(pd.Series([1.0, 2.0], ["a", "b"]), pd.Series([0.0, 0.0], ["a", "b"]))
    assert few.mean_diff == 1.5 and np.isnan(few.ci_low) and np.isnan(few.p_value)
