"""Downstream test score against the fidelity of the synthetic set that fed it
(`fidelity_figures`)."""

from __future__ import annotations

import pandas as pd
import seaborn as sns

from reports.axes import (
    FIDELITY_COLUMNS,
    FIDELITY_REFERENCES,
    RECIPE_FIELDS,
    slug,
    usable_runs,
)
from reports.figure_layout import Plot
from reports.figure_style import (
    caption_axes,
    direction_text,
    hue_order,
    mode_palette,
    new_figure,
    plot_style,
    primary_metric,
    with_mode_labels,
)
from reports.latex import escape_latex
from reports.stats import BASELINE_MODE

_REFERENCE_LINE = "Dashed: the real images' value (the fidelity table's first row)."


def fidelity_figures(
    runs: pd.DataFrame, fidelity: pd.DataFrame | None, palette: dict | None = None
) -> list[Plot]:
    """Downstream test score against each fidelity metric of the synthetic set that fed it,
    one figure per (task, model) and fidelity recipe. A point is a (mode, prompt, real
    fraction): its score averaged over seeds and ratios (protocol mix when there is one).
    Fidelity runs are matched on mode and prompt, and on real fraction when they carry it.
    Needs two matched points or more."""
    if fidelity is None or fidelity.empty:
        return []
    metrics = [m for m in FIDELITY_COLUMNS if m in fidelity and fidelity[m].notna().any()]
    if not metrics:
        return []
    fidelity = fidelity.copy()
    keys = ["mode", "prompt"]
    if "real_fraction" in fidelity and fidelity["real_fraction"].notna().any():
        fidelity["real_fraction"] = pd.to_numeric(fidelity["real_fraction"], errors="coerce")
        keys.append("real_fraction")
    # FD of one recipe is not comparable with FD of another: one figure per recipe.
    recipe = [c for c in RECIPE_FIELDS if c in fidelity.columns]
    recipes = list(fidelity.groupby(recipe, dropna=False)) if recipe else [((), fidelity)]
    runs = usable_runs(runs)
    palette = palette or mode_palette(pd.concat([runs["mode"], fidelity["mode"]]))
    plots = []
    for (task, model), d in runs.groupby(["task", "model"], sort=True):
        metric = primary_metric(d)
        cells = d[d["mode"] != BASELINE_MODE]
        if "mix" in set(cells["protocol"]):
            cells = cells[cells["protocol"] == "mix"]
        if metric is None or cells.empty:
            continue
        score = cells.groupby(["mode", "prompt", "real_fraction"])[metric].mean().reset_index()
        drawn = 0
        for _, fid in recipes:
            # The real images' value of each metric (the fidelity table's first row).
            refs = {
                m: fid[r].mean()
                for m, r in FIDELITY_REFERENCES.items()
                if m in metrics and r in fid and fid[r].notna().any()
            }
            fid = fid.groupby(keys, dropna=False)[metrics].mean().reset_index()
            points = with_mode_labels(score.merge(fid, on=keys))
            if len(points) < 2:
                continue
            shown = [m for m in metrics if points[m].notna().any()]
            fractions = points["real_fraction"].nunique() > 1
            points["real fraction"] = points["real_fraction"].map("{:g}".format)
            ncols = min(len(shown), 3)
            with plot_style():
                fig, axes = new_figure(-(-len(shown) // ncols), ncols, sharey=True)
                for ax, m in zip(axes.ravel(), shown):
                    sns.scatterplot(
                        points,
                        x=m,
                        y=metric,
                        hue="mode_label",
                        hue_order=hue_order(points),
                        style="real fraction" if fractions else None,
                        palette=palette,
                        s=40,
                        ax=ax,
                        legend=ax is axes[0, 0],
                    )
                    if m in refs:
                        ax.axvline(refs[m], color="0.5", linestyle="--", linewidth=0.8)
                    ax.set_xlabel(f"{FIDELITY_COLUMNS[m]} ({direction_text(m)})")
                    ax.set_ylabel(f"test {metric}")
                for ax in axes.ravel()[len(shown) :]:
                    ax.set_visible(False)
                if axes[0, 0].get_legend() is not None:
                    sns.move_legend(axes[0, 0], "best", title=None, fontsize="small")
            where = {"task": task, "model": model}
            if points["real_fraction"].nunique() == 1:
                where["real_fraction"] = points["real_fraction"].iloc[0]
            caption = (
                f"Test {escape_latex(metric)} ({caption_axes(**where)}) against the"
                " fidelity of the synthetic set used: one point per generation mode, prompt"
                " kind and real fraction, its score averaged over seeds and ratios."
                + (f" {_REFERENCE_LINE}" if refs else "")
                + " The fidelity recipe is in the fidelity table's caption."
            )
            # Numbered in the order drawn: a recipe without two points leaves no gap.
            name = f"fidelity-{slug(task, model)}" + (f"-{drawn + 1}" if drawn else "")
            drawn += 1
            plots.append(Plot(name, fig, caption, "fidelity"))
    return plots
