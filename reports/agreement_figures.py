"""Bland-Altman agreement of the ejection fraction with the reference, per generation mode's
best cell (`agreement_figures`)."""

from __future__ import annotations

import pandas as pd

from reports.axes import (
    axis_value,
    cell_ids,
    display_order,
    is_higher_better,
    slug,
    usable_runs,
)
from reports.figure_layout import Plot
from reports.figure_style import (
    caption_axes,
    mode_palette,
    new_figure,
    plot_style,
    primary_metric,
    with_mode_labels,
)
from reports.latex import escape_latex
from reports.stats import BASELINE_MODE


def _cell_text(cell: pd.Series) -> str:
    """A cell's axes besides its mode, for a panel title: `mix, ratio 1, P3`."""
    parts = [str(cell["protocol"]), f"ratio {axis_value('ratio', cell['ratio'])}"]
    return ", ".join(parts + ([str(cell["prompt"])] if cell["prompt"] != "-" else []))


def agreement_figures(
    runs: pd.DataFrame, per_patient: pd.DataFrame | None, palette: dict | None = None
) -> list[Plot]:
    """Bland-Altman plots of the ejection fraction, one figure per (task, model, real
    fraction) whose runs have per-patient indices (`collect_per_patient`): a panel for the
    real-only baseline and one per generation mode, showing that mode's cell with the best
    mean test primary metric (the cell its tables lead with), so that the EF error is seen
    for the model the Dice ranking picks, not picked by it.

    A point is a test patient: x the mean of the predicted and the reference EF, y their
    difference (predicted minus reference), the prediction averaged over the cell's seeds.
    Solid line: the bias; dashed: the 95 % limits of agreement, bias +- 1.96 SD of the
    differences. A figure needs 3 patients or more (fewer give no limits).
    """
    if per_patient is None or per_patient.empty:
        return []
    runs = with_mode_labels(usable_runs(runs))
    runs = runs[runs["run_id"].isin(per_patient["run_id"])]
    palette = palette or mode_palette(runs["mode"])
    plots = []
    for (task, model, rf), d in runs.groupby(["task", "model", "real_fraction"], sort=True):
        metric = primary_metric(d)
        if metric is None or metric not in d.columns:
            continue
        panels = []
        for mode in display_order("mode", d["mode"]):
            of_mode = d[d["mode"] == mode]
            cells = cell_ids(of_mode)
            # By cell, not cell key: a key names one seed, and the best seed's run is picked
            # by its test score.
            score = of_mode.groupby(cells)[metric].mean().dropna()
            if score.empty:
                continue
            best = score.idxmax() if is_higher_better(metric) else score.idxmin()
            cell = of_mode[cells == best]
            points = (
                per_patient[per_patient["run_id"].isin(cell["run_id"])]
                .groupby("patient")[["ef_pred", "ef_ref"]]
                .mean()
            )
            panels.append((cell.iloc[0], points, cell["seed"].nunique()))
        if not panels or min(len(points) for _, points, _ in panels) < 3:
            continue
        ncols = min(3, len(panels))
        nrows = -(-len(panels) // ncols)
        with plot_style():
            fig, axes = new_figure(nrows, ncols, sharex=True, sharey=True)
            for k, ax in enumerate(axes.flat):
                if k >= len(panels):
                    ax.set_visible(False)
                elif k + ncols >= len(panels):  # nothing drawn below: show its x ticks
                    ax.xaxis.set_tick_params(labelbottom=True)
            for ax, (cell, points, _) in zip(axes.flat, panels):
                label = cell["mode_label"]
                colour = palette.get(label, (0.35, 0.35, 0.35))
                diff = points["ef_pred"] - points["ef_ref"]
                bias, loa = float(diff.mean()), float(1.96 * diff.std(ddof=1))
                ax.axhline(0, color="0.6", lw=0.6, ls=":")
                ax.scatter(points.mean(axis=1), diff, s=10, color=colour, alpha=0.8, lw=0)
                ax.axhline(bias, color=colour, lw=1)
                for limit in (bias - loa, bias + loa):
                    ax.axhline(limit, color=colour, lw=0.8, ls="--")
                title = label if cell["mode"] == BASELINE_MODE else f"{label}: {_cell_text(cell)}"
                ax.set_title(title, fontsize="small")
                ax.text(
                    0.02,
                    0.97,
                    f"bias {bias:+.1f}, LoA $\\pm${loa:.1f}",
                    transform=ax.transAxes,
                    va="top",
                    fontsize="x-small",
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1},
                )
            fig.supxlabel("mean of predicted and reference EF (%)", fontsize="small")
            fig.supylabel("predicted $-$ reference EF (points)", fontsize="small")
        seeds = sorted({n for _, _, n in panels})
        seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}--{seeds[-1]}"
        seed_text += " seed" if seeds == [1] else " seeds"
        caption = (
            "Agreement of the ejection fraction with the reference"
            f" ({caption_axes(task=task, model=model, real_fraction=rf)}), after Bland and Altman:"
            " one point per test patient, at the mean of the predicted and the reference EF"
            " against their difference (predicted minus reference, in EF points), the"
            f" prediction averaged over the cell's seeds ({seed_text}). Solid: the bias;"
            r" dashed: the 95\% limits of agreement (bias $\pm$ 1.96 SD). Both EFs are"
            " Simpson's biplane volumes, of the predicted and of the reference label maps."
            " Panels: the real-only baseline and, per generation mode, its cell with the best"
            f" mean test {escape_latex(metric)}."
        )
        name = f"agreement-{slug(task, model, 'rf' + axis_value('real_fraction', rf))}"
        plots.append(Plot(name, fig, caption, "structures"))
    return plots
