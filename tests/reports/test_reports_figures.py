"""The report's figures (reports.figures and its figure modules): which figures the data
supports, what they show, and how they are saved."""

import numpy as np
import pandas as pd
import pytest

from reports.agreement_figures import agreement_figures
from reports.fidelity_figures import fidelity_figures
from reports.figure_style import mode_palette
from reports.figures import write_figures
from reports.sample_figures import sample_figures, synthetic_sets
from reports.score_figures import curve_figures, heatmap_figures, ratio_figures

# (mode, prompt, ratio) -> dice of seeds 0 and 1.
DICE = {
    ("none", "-", 0.0): [0.60, 0.62],
    ("oracle", "-", 0.5): [0.70, 0.72],
    ("oracle", "-", 1.0): [0.74, 0.76],
    ("corrupted", "-", 0.5): [0.50, 0.52],
    ("corrupted", "-", 1.0): [0.40, 0.44],
}


def _runs(dice=DICE, task="seg", real_fraction=0.1) -> pd.DataFrame:
    rows = []
    for (mode, prompt, ratio), values in dice.items():
        key = f"{task}-{mode}-{prompt}-r{ratio:g}-f{real_fraction:g}"
        for seed, value in enumerate(values):
            rows.append(
                dict(
                    run_id=f"{key}-s{seed}",
                    cell_key=key,
                    task=task,
                    mode=mode,
                    prompt=prompt,
                    ratio=ratio,
                    protocol="mix",
                    real_fraction=real_fraction,
                    seed=seed,
                    model="unet",
                    primary_metric="dice_mean",
                    status="ok",
                    dice_mean=value,
                )
            )
    return pd.DataFrame(rows)


def _curves(runs: pd.DataFrame, epochs: int = 4) -> pd.DataFrame:
    rows = [
        (r.run_id, r.cell_key, step, r.dice_mean * step / epochs)
        for r in runs.itertuples()
        for step in range(1, epochs + 1)
    ]
    return pd.DataFrame(rows, columns=["run_id", "cell_key", "step", "value"])


def _titles(plot) -> list[str]:
    titles = [ax.get_title() or ax.get_title(loc="left") for ax in plot.figure.axes]
    return [t for t in titles if t]


def test_ratio_figure_one_panel_per_fraction_and_baseline_line():
    runs = pd.concat([_runs(), _runs(real_fraction=1.0)])
    (plot,) = ratio_figures(runs)
    assert plot.name == "ratio-seg-unet" and plot.section == "downstream"
    assert _titles(plot) == ["mix, real fraction 0.1", "mix, real fraction 1"]
    ax = plot.figure.axes[0]
    # The dashed baseline sits at the real-only mean over seeds.
    (baseline,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert baseline.get_ydata()[0] == pytest.approx(0.61)
    # One line per mode through the seed means at each ratio.
    means = sorted(
        tuple(np.round(ln.get_ydata(), 3))
        for ln in ax.get_lines()
        if ln.get_linestyle() == "-" and len(ln.get_ydata()) == 2
    )
    assert means == [(0.51, 0.42), (0.71, 0.75)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "real only",
        "oracle",
        "corrupted",
    ]
    assert r"mean $\pm$ std over seeds" in plot.caption and r"dice\_mean" in plot.caption


def _data_height(ax, patch) -> float:
    """A band's height in data units: ``axhspan`` returns a Rectangle in newer matplotlib,
    a Polygon (no ``get_height``) in older ones."""
    to_data = patch.get_transform() - ax.transData  # it includes the patch transform
    ys = to_data.transform(patch.get_path().vertices)[:, 1]
    return float(ys.max() - ys.min())


def test_ratio_figure_draws_a_prompted_tasks_baseline_per_prompt_kind():
    # vlseg's real-only baseline reads the prompt: P1 and P2 differ by far more than the seeds.
    dice = {
        ("none", "P1", 0.0): [0.50, 0.52],
        ("none", "P2", 0.0): [0.70, 0.72],
        ("oracle", "P1", 0.5): [0.60, 0.62],
        ("oracle", "P1", 1.0): [0.64, 0.66],
        ("oracle", "P2", 0.5): [0.74, 0.76],
        ("oracle", "P2", 1.0): [0.78, 0.80],
    }
    (plot,) = ratio_figures(_runs(dice, task="vlseg"))
    ax = plot.figure.axes[0]
    grey = mode_palette(["none"])["real only"]
    baselines = [ln for ln in ax.get_lines() if ln.get_color() == grey]
    # One line per prompt kind at its own mean over seeds, in that kind's line style...
    assert sorted(round(ln.get_ydata()[0], 3) for ln in baselines) == [0.51, 0.71]
    cells = {round(ln.get_ydata()[0], 3): ln for ln in ax.get_lines() if ln.get_marker() == "o"}
    assert [ln.get_linestyle() for ln in baselines] == ["-", "--"]  # P1 solid, P2 dashed
    assert [cells[0.61].get_linestyle(), cells[0.75].get_linestyle()] == ["-", "--"]
    # ...with a band of +- the std over its seeds, not over the pooled prompt kinds.
    heights = [_data_height(ax, p) for p in ax.patches]
    assert heights == pytest.approx([2 * np.std([0.50, 0.52], ddof=1)] * 2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "real only",
        "oracle",
        "P1",
        "P2",
    ]
    assert "real-only baseline of each prompt kind" in plot.caption


def test_ratio_figure_needs_two_ratios():
    one_ratio = {k: v for k, v in DICE.items() if k[2] in (0.0, 1.0)}
    assert ratio_figures(_runs(one_ratio)) == []


def test_failed_runs_are_not_drawn():
    runs = _runs()
    runs.loc[runs["mode"] == "corrupted", "status"] = "failed"
    (plot,) = ratio_figures(runs)
    assert [t.get_text() for t in plot.figure.axes[0].get_legend().get_texts()] == [
        "real only",
        "oracle",
    ]


def test_curve_figure_mean_and_band():
    runs = _runs()
    (plot,) = curve_figures(runs, _curves(runs))
    assert plot.name == "curves-seg-unet" and plot.section == "convergence"
    ax = plot.figure.axes[0]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "validation dice_mean"
    # The baseline's mean curve at the last epoch: mean of its two seeds' final values.
    lines = {
        round(float(ln.get_ydata()[-1]), 3) for ln in ax.get_lines() if len(ln.get_ydata()) == 4
    }
    assert 0.61 in lines
    assert ax.collections, "no confidence band drawn"
    assert r"95\% bootstrap confidence" in plot.caption


def test_curve_figure_skipped_without_curves_or_with_one_epoch():
    runs = _runs()
    empty = pd.DataFrame(columns=["run_id", "cell_key", "step", "value"])
    assert curve_figures(runs, empty) == []
    assert curve_figures(runs, _curves(runs, epochs=1)) == []


def test_heatmap_needs_two_prompt_kinds():
    assert heatmap_figures(_runs()) == []  # unconditional-style cells have no prompt
    dice = {
        ("text", "P1", 1.0): [0.70, 0.72],
        ("text", "P2", 1.0): [0.80, 0.84],
        ("hybrid", "P1", 1.0): [0.60, 0.60],
        ("hybrid", "P2", 1.0): [0.90, 0.92],
        ("text", "P1", 2.0): [0.71, 0.71],
    }
    (plot,) = heatmap_figures(_runs(dice))
    assert plot.name == "heatmap-seg-unet-mix-rf0p1"
    assert _titles(plot) == ["ratio 1", "ratio 2"]
    # Annotations are the means over seeds, rows in mode order (text before hybrid).
    texts = [t.get_text() for t in plot.figure.axes[0].texts]
    assert texts == ["0.710", "0.820", "0.600", "0.910"]


def test_fidelity_figure_joins_on_mode_and_prompt():
    runs = _runs()
    assert fidelity_figures(runs, None) == []
    assert fidelity_figures(runs, pd.DataFrame(columns=["run_id", "mode", "prompt"])) == []
    fid = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "mode": ["oracle", "corrupted", "corrupted"],
            "prompt": ["-", "-", "-"],
            "fd": [1.0, 9.0, 11.0],  # two replicates of corrupted: mean 10
            "mask_dice": [0.95, 0.2, 0.2],
        }
    )
    (plot,) = fidelity_figures(runs, fid)
    assert plot.section == "fidelity"
    ax = plot.figure.axes[0]
    assert ax.get_xlabel() == "FD (lower is better)"
    # A point per mode: (FD, dice averaged over seeds and ratios).
    points = sorted(map(tuple, np.round(ax.collections[0].get_offsets(), 3).tolist()))
    assert points == [(1.0, 0.73), (10.0, 0.465)]
    assert fidelity_figures(runs, fid.iloc[:1]) == []  # one point: nothing to relate
    before = [tuple(line.get_xdata()) for line in ax.lines]
    assert "Dashed" not in plot.caption
    # With the floor logged, a dashed vertical line marks the real images' FD.
    (plot,) = fidelity_figures(runs, fid.assign(fd_floor=2.5))
    (line,) = [ln for ln in plot.figure.axes[0].lines if tuple(ln.get_xdata()) not in before]
    assert list(line.get_xdata()) == [2.5, 2.5] and line.get_linestyle() == "--"
    assert "Dashed: the real images' value" in plot.caption


def test_sample_figures_real_row_then_modes(tmp_path, fake_run_dir):
    run_dir = fake_run_dir(tmp_path)
    assert len(synthetic_sets(run_dir)) == 4
    plots = sample_figures(run_dir)
    assert [p.name for p in plots] == ["samples-rf0p1", "samples-rf1"]
    assert all(p.raster and p.section == "samples" for p in plots)
    assert _titles(plots[0]) == ["real (training split)", "oracle", "corrupted"]
    # Two rows of eight image pairs, cropped from the 4-row grid: (8 + 2) px per row.
    picture = plots[0].figure.axes[1].get_images()[0].get_array()
    assert picture.shape[0] == 2 * (8 + 2)
    assert "10\\%" in plots[0].caption and "lower bound" in plots[0].caption
    assert sample_figures(None) == [] and sample_figures(tmp_path / "nothing") == []


def test_sample_figures_show_only_the_sets_the_reported_cells_used(tmp_path, fake_run_dir):
    run_dir = fake_run_dir(tmp_path)
    (plot,) = sample_figures(run_dir, stages=["seg-oracle-r1-f0.1", None])
    assert plot.name == "samples-rf0p1"
    assert _titles(plot) == ["real (training split)", "oracle"]
    assert sample_figures(run_dir, stages=["no-such-cell"]) == []


REF_EF = np.array([50.0, 55, 60, 65, 70])
SPREAD = np.array([-2.0, -1, 0, 1, 2])  # per-patient part of the difference: SD sqrt(2.5)


def _per_patient(runs: pd.DataFrame, offset) -> pd.DataFrame:
    """Five test patients per run; predicted EF = reference + offset(run) + SPREAD."""
    rows = []
    for run in runs.itertuples():
        for i, (ref, spread) in enumerate(zip(REF_EF, SPREAD)):
            pred = ref + offset(run) + spread
            rows.append(dict(run_id=run.run_id, patient=f"p{i}", ef_pred=pred, ef_ref=ref))
    return pd.DataFrame(rows)


def test_agreement_figure_shows_each_modes_best_cell_with_bias_and_limits():
    runs = _runs()
    # Seeds 0 and 1 differ by 2 points: the panel averages them (offset 1 + seed * 2 -> +2).
    per_patient = _per_patient(runs, lambda r: 1 + 2 * r.seed + (r.mode == "oracle") * 3)
    (plot,) = agreement_figures(runs, per_patient)
    assert plot.name == "agreement-seg-unet-rf0p1" and plot.section == "structures"
    # The best dice_mean cell of each mode: oracle at ratio 1, corrupted at ratio 0.5.
    assert _titles(plot) == ["real only", "oracle: mix, ratio 1", "corrupted: mix, ratio 0.5"]
    axes = [ax for ax in plot.figure.axes if ax.get_visible()]
    loa = 1.96 * np.sqrt(2.5)
    texts = [ax.texts[0].get_text() for ax in axes]
    assert texts == [f"bias {b}, LoA $\\pm${loa:.1f}" for b in ("+2.0", "+5.0", "+2.0")]
    # Real only: x = mean of predicted and reference, y = their difference, per patient.
    offsets = axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], REF_EF + (2 + SPREAD) / 2)
    np.testing.assert_allclose(offsets[:, 1], 2 + SPREAD)
    lines = sorted(ln.get_ydata()[0] for ln in axes[1].get_lines())
    np.testing.assert_allclose(lines, [0, 5 - loa, 5, 5 + loa])  # zero, limits, bias
    assert "Bland and Altman" in plot.caption and "best" in plot.caption


def test_agreement_figure_picks_the_cell_by_its_seed_mean_and_averages_its_seeds():
    # Cell keys name the seed, as the sweep logs them: oracle at ratio 0.5 has the best single
    # seed (0.90), oracle at ratio 1 the best mean (0.80 against 0.60).
    dice = {
        ("none", "-", 0.0): [0.60, 0.62, 0.64],
        ("oracle", "-", 0.5): [0.90, 0.45, 0.45],
        ("oracle", "-", 1.0): [0.80, 0.80, 0.80],
    }
    runs = _runs(dice)
    runs["cell_key"] = runs["run_id"]
    per_patient = _per_patient(runs, lambda r: 3 * r.seed + 10 * r.ratio)
    (plot,) = agreement_figures(runs, per_patient)
    assert _titles(plot) == ["real only", "oracle: mix, ratio 1"]
    axes = [ax for ax in plot.figure.axes if ax.get_visible()]
    # Bias: the mean offset over seeds 0, 1 and 2 (+3 each), not one seed's.
    assert [ax.texts[0].get_text().split(",")[0] for ax in axes] == ["bias +3.0", "bias +13.0"]
    assert "(3 seeds)" in plot.caption


def test_agreement_figure_needs_per_patient_rows_and_three_patients():
    runs = _runs()
    assert agreement_figures(runs, None) == []
    assert agreement_figures(runs, _per_patient(runs, lambda r: 0).iloc[:0]) == []
    two = _per_patient(runs, lambda r: 0)
    assert agreement_figures(runs, two[two["patient"].isin(["p0", "p1"])]) == []
    # Runs without a per-patient table (cls, or seg without spacing) are not drawn.
    assert agreement_figures(runs.assign(task="cls"), two.iloc[:0]) == []


def test_write_figures_saves_pdf_and_png(tmp_path, fake_run_dir):
    runs = _runs()
    figs = write_figures(
        runs,
        _curves(runs),
        tmp_path / "figures",
        per_patient=_per_patient(runs, lambda r: 1.0),
        run_dir=fake_run_dir(tmp_path / "run"),
    )
    names = [f.path.name for f in figs]
    assert names == [
        "ratio-seg-unet.pdf",
        "agreement-seg-unet-rf0p1.pdf",
        "curves-seg-unet.pdf",
        "samples-rf0p1.png",
        "samples-rf1.png",
    ]
    assert all(f.path.stat().st_size > 1000 for f in figs)
    assert [f.label for f in figs][0] == "fig:ratio-seg-unet"
    assert all(0 < f.width <= 1 for f in figs)
    assert figs[0].path.read_bytes().startswith(b"%PDF")


def test_palette_is_stable_and_baseline_grey():
    palette = mode_palette(["corrupted", "none", "oracle"])
    assert list(palette) == ["oracle", "corrupted", "real only"]
    assert palette["real only"] == (0.35, 0.35, 0.35)


def test_fidelity_pairs_each_set_with_the_cells_of_its_real_fraction():
    runs = pd.concat([_runs(), _runs(real_fraction=1.0)])
    runs.loc[runs["real_fraction"] == 1.0, "dice_mean"] += 0.2
    fid = pd.DataFrame(
        {
            "run_id": list("abcd"),
            "mode": ["oracle", "corrupted"] * 2,
            "prompt": ["-"] * 4,
            "real_fraction": [0.1, 0.1, 1.0, 1.0],
            "fd": [2.0, 8.0, 1.0, 4.0],
        }
    )
    (plot,) = fidelity_figures(runs, fid)
    points = sorted(map(tuple, np.round(plot.figure.axes[0].collections[0].get_offsets(), 3)))
    # (FD of the set, dice of the cells trained with it): no cross-fraction pairs.
    assert points == [(1.0, 0.93), (2.0, 0.73), (4.0, 0.665), (8.0, 0.465)]
