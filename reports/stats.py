"""Statistics for the results tables: summaries over seeds, and paired tests against the
real-only baseline with Holm–Bonferroni correction.

Inputs are the frames of `reports.collect`: `runs` (one row per cell run) and `per_sample`
(long: run_id, cell_key, seed, sample, metric, value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata, wilcoxon

BASELINE_MODE = "none"
BASELINE_PROTOCOL = "mix"
# Axes a cell shares with its real-only baseline; vlseg also pairs on the prompt, because there
# the prompt conditions the segmenter itself, not only a generator.
BASELINE_KEYS = ("task", "model", "real_fraction", "seed")
PROMPTED_TASKS = ("vlseg",)
# Tasks that score each test image once per structure (`downstream.vlseg`): a sample id is
# `<image id>_<structure>`, and the per-structure Dice is the `dice_mean` of one structure.
STRUCTURE_TASKS = ("vlseg",)
STRUCTURE_DICE = {"LV": "dice_lv", "MYO": "dice_myo", "LA": "dice_la"}
_STRUCTURE_SAMPLE = rf"^(?P<image>.+)_(?P<structure>{'|'.join(STRUCTURE_DICE)})$"

# What a paired test pairs: each test image, or each test patient (the mean over the patient's
# test images). A patient's images (two views, two phases) share its anatomy and its image
# quality, so they are not independent samples: pairing images counts each patient up to
# four times, which makes p smaller than the patients alone support.
TEST_UNITS = ("image", "patient")
# An image's sample id (`EchoData.sample_ids`: patient_view_phase; views and phases as the
# data layer admits them). Other ids (the clinical indices' rows, one per patient) are
# patients already.
_IMAGE_SAMPLE = r"^(?P<patient>.+)_(?:2CH|4CH)_(?:ED|ES)$"

# The smallest n at which an exact two-sided signed-rank test can reach p < 0.05
# (all six differences of one sign: p = 2 / 2**6 = 0.031); with fewer pairs a test can only
# ever say "not significant", so it is reported as not done (NaN) instead.
MIN_PAIRS = 6


@dataclass(frozen=True)
class WilcoxonResult:
    """Paired two-sided Wilcoxon signed-rank test of cell vs baseline.

    `direction` is the sign of R+ - R- (the signed-rank sums the test is built on): +1 when the
    cell's values tend to be larger than the baseline's, -1 smaller, 0 balanced.
    `p_value` is NaN when there were fewer than `min_pairs` pairs (no test done).
    `median_diff` and `mean_diff` summarise the paired differences (cell - baseline);
    `ci_low`, `ci_high` bound `mean_diff` with a 95 % percentile bootstrap over the pairs
    (`bootstrap_mean_ci`; NaN without a test): how far the effect could be from the one
    measured on this test set, not Holm-adjusted.
    """

    n_pairs: int
    statistic: float
    p_value: float
    direction: int
    median_diff: float
    mean_diff: float
    ci_low: float
    ci_high: float


# Resamples of the bootstrap interval, and its seed: a report is the same every time it is
# made. With 10,000 resamples an end moves by 0.5 to 1 % of the interval's width from seed to
# seed (standard deviation over 20 seeds, run 14's Dice differences at 10 % real, 32 pairs);
# an interval over 200 pairs takes about 30 ms.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def bootstrap_mean_ci(
    differences: np.ndarray, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `differences` ``(n,)``: the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the means of `resamples` samples
    of n drawn with replacement. Written out rather than `scipy.stats.bootstrap`, whose seed
    argument changed name (`random_state`, then `rng`) within the SciPy versions admitted."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = np.empty(resamples)
    step = max(1, 2**22 // d.size)  # resamples per draw: 32 MiB of indices at most
    for start in range(0, resamples, step):
        k = min(step, resamples - start)
        means[start : start + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def summarise(df: pd.DataFrame, by: str | Sequence[str], metric: str) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1) and count of `metric` per `by` group.

    Missing values are left out of all three. With a single value `std` is NaN, not 0: one seed
    says nothing about spread, so tables print the mean alone rather than a fake "± 0.00".
    """
    by = [by] if isinstance(by, str) else list(by)
    grouped = df.groupby(by, sort=False, dropna=False)[metric]
    out = grouped.agg(mean="mean", std=lambda s: s.std(ddof=1), n="count").reset_index()
    out["n"] = out["n"].astype(int)
    return out


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the k-th smallest of m p-values (k from 0) becomes
    max over j <= k of min(1, (m - j) * p_(j)); rejecting adjusted p < alpha controls the
    family-wise error rate at alpha. NaNs (tests not done) are not counted in m and stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def paired_wilcoxon(
    cell: pd.Series, baseline: pd.Series, min_pairs: int = MIN_PAIRS
) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of `cell` vs `baseline`, paired by index (sample id).

    Samples present in only one series, or non-finite in either (e.g. an infinite HD95 for an
    empty prediction), are dropped. Zero differences are discarded (scipy's "wilcox" method);
    if all differences are zero the two are identical on this data and p = 1.
    """
    both = pd.concat({"cell": cell, "base": baseline}, axis=1, join="inner")
    both = both[np.isfinite(both["cell"]) & np.isfinite(both["base"])]
    d = (both["cell"] - both["base"]).to_numpy(dtype=float)
    n = int(d.size)
    nan = float("nan")
    sizes = {
        "n_pairs": n,
        "median_diff": float(np.median(d)) if n else nan,
        "mean_diff": float(d.mean()) if n else nan,
    }
    if n < min_pairs:
        no_test = {"statistic": nan, "p_value": nan, "ci_low": nan, "ci_high": nan}
        return WilcoxonResult(direction=0, **sizes, **no_test)
    low, high = bootstrap_mean_ci(d)
    sizes |= {"ci_low": low, "ci_high": high}
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return WilcoxonResult(statistic=0.0, p_value=1.0, direction=0, **sizes)
    ranks = rankdata(np.abs(nonzero))
    direction = int(np.sign(ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()))
    res = wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    return WilcoxonResult(
        statistic=float(res.statistic), p_value=float(res.pvalue), direction=direction, **sizes
    )


def _prompt_key(runs: pd.DataFrame) -> pd.Series:
    return runs["prompt"].where(runs["task"].isin(PROMPTED_TASKS), "")


def is_baseline(runs: pd.DataFrame) -> pd.Series:
    """Rows that are real-only baselines (mode `none`)."""
    return runs["mode"] == BASELINE_MODE


def match_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """Pair every non-baseline run with its real-only baseline run.

    The baseline of a cell is the run with mode `none`, protocol `mix`, and the same task, model,
    real_fraction, seed and (for vlseg) prompt. Returns columns run_id, baseline_run_id, one row
    per run that has a baseline; if a baseline was logged twice the latest run is used.
    """
    keys = [*BASELINE_KEYS, "_prompt_key"]
    runs = runs.assign(_prompt_key=_prompt_key(runs))
    base = runs[is_baseline(runs) & (runs["protocol"] == BASELINE_PROTOCOL)]
    if "start_time" in base.columns:
        base = base.sort_values("start_time")
    base = base.drop_duplicates(keys, keep="last")
    cells = runs[~is_baseline(runs)]
    pairs = cells[["run_id", *keys]].merge(
        base[["run_id", *keys]].rename(columns={"run_id": "baseline_run_id"}), on=keys
    )
    return pairs[["run_id", "baseline_run_id"]].reset_index(drop=True)


def seed_mean(per_sample: pd.DataFrame, run_ids, metric: str) -> pd.Series:
    """Per-sample value of `metric` averaged over the given runs (the seeds of one cell),
    indexed by sample id, so that each sample enters a paired test once."""
    sel = per_sample[per_sample["run_id"].isin(list(run_ids)) & (per_sample["metric"] == metric)]
    return sel.groupby("sample")["value"].mean()


def image_samples(runs: pd.DataFrame, per_sample: pd.DataFrame) -> pd.DataFrame:
    """`per_sample` (run_id, sample, metric, value) with the (image, structure) rows of the
    `STRUCTURE_TASKS` runs made one row per image: each metric averaged over the image's
    structures, and `dice_lv`, `dice_myo`, `dice_la` the `dice_mean` of the one structure.

    The image is the unit of the paired tests: the structures of one image are not
    independent samples (pairing them as such makes p too small), and the per-structure Dice
    would otherwise have no per-sample values to be tested on."""
    # A fresh index: `phase_samples` repeats labels, and the parts below align on them.
    per_sample = per_sample[["run_id", "sample", "metric", "value"]].reset_index(drop=True)
    ids = runs.loc[runs["task"].isin(STRUCTURE_TASKS), "run_id"]
    parts = per_sample["sample"].astype(str).str.extract(_STRUCTURE_SAMPLE)
    pair = per_sample["run_id"].isin(ids) & parts["structure"].notna()
    if not pair.any():
        return per_sample
    rows = per_sample[pair].assign(sample=parts.loc[pair, "image"])
    images = rows.groupby(["run_id", "sample", "metric"], sort=False)["value"].mean()
    dice = rows[rows["metric"] == "dice_mean"]
    structure = dice.assign(metric=parts.loc[dice.index, "structure"].map(STRUCTURE_DICE))
    return pd.concat([per_sample[~pair], images.reset_index(), structure], ignore_index=True)


def check_test_unit(test_unit: str) -> None:
    """ValueError unless `test_unit` is one of `TEST_UNITS`."""
    if test_unit not in TEST_UNITS:
        raise ValueError(f"test_unit must be one of {', '.join(TEST_UNITS)}, not {test_unit!r}")


def patient_samples(per_sample: pd.DataFrame) -> pd.DataFrame:
    """`per_sample` (the long layout, one row per image: after `image_samples`) with each
    run's metric averaged over the images of each test patient, the patient as the sample.
    Rows whose sample is not an image id (`patient_errors`' rows) are patients already and
    are kept as they are."""
    per_sample = per_sample[["run_id", "sample", "metric", "value"]].reset_index(drop=True)
    patient = per_sample["sample"].astype(str).str.extract(_IMAGE_SAMPLE)["patient"]
    image = patient.notna()
    if not image.any():
        return per_sample
    rows = per_sample[image].assign(sample=patient[image])
    patients = rows.groupby(["run_id", "sample", "metric"], sort=False)["value"].mean()
    return pd.concat([per_sample[~image], patients.reset_index()], ignore_index=True)


def phase_samples(per_sample: pd.DataFrame, phase: str, metrics: list[str]) -> pd.DataFrame:
    """`per_sample` (the long layout) with its rows of `metrics` on the test images at
    `phase` ("ed" or "es") repeated as `<metric>_<phase>`: the per-image values behind seg's
    per-phase means (`dice_lv_es`, ...), for the per-phase tables' paired tests. A sample id
    ends with its image's phase (`EchoData.sample_ids`: patient_view_phase)."""
    rows = per_sample[
        per_sample["metric"].isin(metrics)
        & per_sample["sample"].astype(str).str.endswith(f"_{phase.upper()}")
    ]
    return pd.concat([per_sample, rows.assign(metric=rows["metric"] + f"_{phase}")])


def compare_to_baseline(
    runs: pd.DataFrame,
    per_sample: pd.DataFrame,
    by: str | Sequence[str],
    metric: str,
    min_pairs: int = MIN_PAIRS,
    test_unit: str = "image",
) -> pd.DataFrame:
    """Test every `by` group of non-baseline runs against the matching real-only baselines.

    Only seeds that have both a cell run and a baseline run enter a group's test; per-sample
    values are averaged over those seeds on each side, then paired by sample: by image (for
    vlseg, its structures averaged: `image_samples`), or with `test_unit` "patient" by test
    patient (`patient_samples`). All groups tested in one call form one family for Holm's
    correction (one table = one family).
    Returns `by` + n_seeds, `WilcoxonResult`'s fields, p_holm.
    """
    check_test_unit(test_unit)
    by = [by] if isinstance(by, str) else list(by)
    pairs = match_baselines(runs)
    cells = runs.merge(pairs, on="run_id")
    tested = per_sample["run_id"].isin(pd.concat([cells["run_id"], cells["baseline_run_id"]]))
    per_sample = image_samples(runs, per_sample[tested])
    if test_unit == "patient":
        per_sample = patient_samples(per_sample)
    rows = []
    for key, group in cells.groupby(by, sort=False, dropna=False):
        res = paired_wilcoxon(
            seed_mean(per_sample, group["run_id"], metric),
            seed_mean(per_sample, group["baseline_run_id"], metric),
            min_pairs=min_pairs,
        )
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            dict(zip(by, key))
            | {"n_seeds": group["seed"].nunique()}
            | {f: getattr(res, f) for f in WilcoxonResult.__dataclass_fields__}
        )
    cols = [*by, "n_seeds", *WilcoxonResult.__dataclass_fields__, "p_holm"]
    out = pd.DataFrame(rows, columns=cols[:-1])
    out["p_holm"] = holm(out["p_value"].to_numpy(dtype=float))
    return out[cols]
