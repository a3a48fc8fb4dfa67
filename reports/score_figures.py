"""Figures of the downstream scores against the grid's axes: validation curves per epoch
(`curve_figures`), the test score against the synthetic:real ratio (`ratio_figures`), and mode x
prompt kind heatmaps (`heatmap_figures`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.axes import (
    BASELINE_LABEL,
    axis_value,
    display_order,
    is_higher_better,
    slug,
    usable_runs,
)
from reports.figure_layout import FULL_WIDTH, Plot
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
from reports.stats import BASELINE_MODE, PROMPTED_TASKS

# Bootstrap of the validation curves' confidence band: fixed seed, so a report is reproducible.
CI_LEVEL = 95
N_BOOT = 500
# Line styles of the prompt kinds (seaborn's first eight), set here so that a prompted task's
# real-only baselines and the legend can draw each kind's style too.
PROMPT_DASHES = [
    "",
    (4, 1.5),
    (1, 1),
    (3, 1.25, 1.5, 1.25),
    (5, 1, 1, 1),
    (3, 1.25, 1.25, 1.25, 1.25, 1.25),
    (4, 1, 4, 1, 1, 1),
    (3, 1.25, 3, 1.25, 1.25, 1.25),
]


def curve_figures(
    runs: pd.DataFrame, curves: pd.DataFrame, palette: dict | None = None
) -> list[Plot]:
    """Validation score per epoch, one figure per (task, model): panels real fraction (rows)
    x protocol (columns), a line per mode (mean over runs) with a bootstrap confidence band.
    `curves` is `collect_curves`' frame of each run's `val/<primary_metric>`. The real-only
    baseline appears in every protocol's panel: it is the reference of each."""
    runs = usable_runs(runs)
    if curves.empty or runs.empty:
        return []
    cols = ["run_id", "task", "model", "mode", "protocol", "real_fraction", "primary_metric"]
    data = with_mode_labels(curves.merge(runs[cols], on="run_id"))
    palette = palette or mode_palette(runs["mode"])
    plots = []
    for (task, model), d in data.groupby(["task", "model"], sort=True):
        metric = primary_metric(d)
        # A curve needs two epochs; a single point per run has no shape to show.
        if metric is None or d.groupby("run_id")["step"].nunique().max() < 2:
            continue
        cells = d[d["mode"] != BASELINE_MODE]
        protocols = display_order("protocol", cells["protocol"]) or ["mix"]
        fractions = display_order("real_fraction", d["real_fraction"])
        with plot_style():
            fig, axes = new_figure(len(fractions), len(protocols), sharex=True, sharey=True)
            for i, rf in enumerate(fractions):
                for j, protocol in enumerate(protocols):
                    ax = axes[i, j]
                    panel = d[
                        (d["real_fraction"] == rf)
                        & ((d["protocol"] == protocol) | (d["mode"] == BASELINE_MODE))
                    ]
                    sns.lineplot(
                        panel,
                        x="step",
                        y="value",
                        hue="mode_label",
                        hue_order=[h for h in hue_order(d) if h in set(panel["mode_label"])],
                        palette=palette,
                        errorbar=("ci", CI_LEVEL),
                        n_boot=N_BOOT,
                        seed=0,
                        ax=ax,
                        legend=i == 0 and j == 0,
                    )
                    ax.set_title(f"{protocol}, real fraction {rf:g}")
                    ax.set_xlabel("epoch")
                    ax.set_ylabel(f"validation {metric}")
            if axes[0, 0].get_legend() is not None:
                sns.move_legend(axes[0, 0], "best", title=None, fontsize="small")
        caption = (
            f"Validation {escape_latex(metric)} per epoch ({caption_axes(task=task, model=model)}),"
            " per protocol and real fraction: the line is the mean over the runs of a mode"
            rf" (seeds and synthetic:real ratios), the band its {CI_LEVEL}\% bootstrap confidence"
            " interval; the real-only baseline is repeated in every protocol's panel."
        )
        plots.append(Plot(f"curves-{slug(task, model)}", fig, caption, "convergence"))
    return plots


def ratio_figures(runs: pd.DataFrame, palette: dict | None = None) -> list[Plot]:
    """Test score against the synthetic:real ratio, one figure per (task, model): panels
    protocol (rows) x real fraction (columns), a line per mode (mean ± std over seeds), and the
    real-only baseline as a dashed line with its ± std band. Needs two ratios or more."""
    runs = with_mode_labels(usable_runs(runs))
    palette = palette or mode_palette(runs["mode"])
    plots = []
    for (task, model), d in runs.groupby(["task", "model"], sort=True):
        metric = primary_metric(d)
        cells = d[d["mode"] != BASELINE_MODE]
        if metric is None or cells["ratio"].nunique() < 2:
            continue
        protocols = display_order("protocol", cells["protocol"])
        fractions = display_order("real_fraction", d["real_fraction"])
        ratios = display_order("ratio", cells["ratio"])
        prompt_order = display_order("prompt", cells["prompt"])
        prompts = len(prompt_order) > 1
        dashes = _prompt_dashes(prompt_order)
        baselines = d[d["mode"] == BASELINE_MODE]
        # A prompted task's baseline reads the prompt too: pooling its prompt kinds would mix
        # their spread into the band. One baseline per kind, in that kind's line style.
        per_prompt = task in PROMPTED_TASKS
        if per_prompt:
            baselines = baselines[baselines["prompt"].isin(prompt_order)]
        with plot_style():
            fig, axes = new_figure(len(protocols), len(fractions), sharex=True, sharey=True)
            for i, protocol in enumerate(protocols):
                for j, rf in enumerate(fractions):
                    ax = axes[i, j]
                    panel = cells[(cells["protocol"] == protocol) & (cells["real_fraction"] == rf)]
                    base = baselines[baselines["real_fraction"] == rf]
                    groups = (
                        base.groupby("prompt")[metric]
                        if per_prompt and prompts
                        else [(None, base[metric])]
                    )
                    for prompt, values in groups:
                        _baseline(ax, values, palette[BASELINE_LABEL], dashes.get(prompt))
                    if len(panel):
                        sns.lineplot(
                            panel,
                            x="ratio",
                            y=metric,
                            hue="mode_label",
                            hue_order=[h for h in hue_order(cells) if h in set(panel.mode_label)],
                            style="prompt" if prompts else None,
                            style_order=prompt_order if prompts else None,
                            dashes=dashes if prompts else True,
                            palette=palette,
                            errorbar="sd",
                            err_style="bars",
                            marker="o",
                            ax=ax,
                            legend=False,
                        )
                    ax.set_xscale("log", base=2)
                    ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
                    ax.minorticks_off()
                    ax.set_title(f"{protocol}, real fraction {rf:g}")
                    ax.set_xlabel("synthetic:real ratio")
                    ax.set_ylabel(f"test {metric}")
            _shared_legend(
                fig,
                axes,
                palette,
                hue_order(d),
                dashes if prompts else {},
                baseline_dashed=not (per_prompt and prompts),
            )
        if per_prompt and prompts:
            base_text = (
                "grey: the real-only baseline of each prompt kind, in that kind's line style,"
                " with its $\\pm$ std band over seeds."
            )
        else:
            base_text = "dashed: the real-only baseline with its $\\pm$ std band over seeds."
        caption = (
            f"Test {escape_latex(metric)} ({direction_text(metric)}) against the synthetic:real"
            f" ratio ({caption_axes(task=task, model=model)}): mean $\\pm$ std over seeds per"
            " generation mode"
            + (", a line style per prompt kind" if prompts else "")
            + f"; {base_text}"
        )
        plots.append(Plot(f"ratio-{slug(task, model)}", fig, caption, "downstream"))
    return plots


def _prompt_dashes(prompts: list[str]) -> dict[str, str | tuple]:
    """The line style of each prompt kind, in display order."""
    return {p: PROMPT_DASHES[k % len(PROMPT_DASHES)] for k, p in enumerate(prompts)}


def _line_style(dash: str | tuple) -> str | tuple:
    """A seaborn dash pattern as a matplotlib line style ("" is solid)."""
    return (0, dash) if dash else "-"


def _baseline(ax, values: pd.Series, colour: tuple, dash: str | tuple | None) -> None:
    """The real-only baseline: a line at the mean over seeds with its +- std band, dashed or,
    for one prompt kind of a prompted task, in that kind's style (`dash`)."""
    if not len(values):
        return
    mean, std = values.mean(), values.std(ddof=1)
    style = "--" if dash is None else _line_style(dash)
    ax.axhline(mean, color=colour, ls=style, lw=1, label=BASELINE_LABEL)
    if np.isfinite(std):
        ax.axhspan(mean - std, mean + std, color=colour, alpha=0.12, lw=0)


def _shared_legend(
    fig: Figure,
    axes: np.ndarray,
    palette: dict,
    labels: list[str],
    dashes: dict[str, str | tuple],
    baseline_dashed: bool = True,
) -> None:
    """One legend for all panels, in mode order then the prompt kinds' line styles (`dashes`,
    none when one kind), drawn on the first panel."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            color=palette[label],
            ls=("--" if baseline_dashed else "-") if label == BASELINE_LABEL else "-",
            marker=None if label == BASELINE_LABEL else "o",
        )
        for label in labels
    ]
    handles += [Line2D([], [], color="0.2", ls=_line_style(d)) for d in dashes.values()]
    axes[0, 0].legend(handles, labels + list(dashes), fontsize="small")


def heatmap_figures(runs: pd.DataFrame) -> list[Plot]:
    """Mode x prompt kind heatmaps of the test score (mean over seeds), one figure per (task,
    model, protocol, real fraction) with a panel per ratio. Only cells that read a prompt
    enter; a figure needs two prompt kinds or more."""
    runs = with_mode_labels(usable_runs(runs))
    prompted = runs[runs["prompt"] != "-"]
    plots = []
    cells = prompted[prompted["mode"] != BASELINE_MODE]
    axes_ = ["task", "model", "protocol", "real_fraction"]
    for (task, model, protocol, rf), group in cells.groupby(axes_, sort=True):
        metric = primary_metric(group)
        # vlseg baselines read the prompt too: they get a row of their own in every panel.
        base = prompted[
            (prompted["mode"] == BASELINE_MODE)
            & (prompted["task"] == task)
            & (prompted["model"] == model)
            & (prompted["real_fraction"] == rf)
        ]
        if metric is None or group["prompt"].nunique() < 2:
            continue
        ratios = display_order("ratio", group["ratio"])
        prompts = display_order("prompt", pd.concat([group["prompt"], base["prompt"]]))
        values = pd.concat([group, base])[metric].astype(float)
        vmin, vmax = values.min(), values.max()
        with plot_style():
            fig, axes = new_figure(
                1,
                len(ratios),
                width=min(FULL_WIDTH, 0.55 * len(prompts) * len(ratios) + 2.5),
                height=0.35 * (group["mode"].nunique() + (len(base) > 0)) + 1.2,
            )
            for j, ratio in enumerate(ratios):
                panel = pd.concat([base, group[group["ratio"] == ratio]])
                table = panel.pivot_table(
                    index="mode_label", columns="prompt", values=metric, aggfunc="mean"
                )
                rows = [r for r in hue_order(panel) if r in table.index]
                sns.heatmap(
                    table.reindex(index=rows, columns=prompts),
                    annot=True,
                    fmt=".3f",
                    annot_kws={"fontsize": 6},
                    cmap="viridis" if is_higher_better(metric) else "viridis_r",
                    vmin=vmin,
                    vmax=vmax,
                    cbar=j == len(ratios) - 1,
                    ax=axes[0, j],
                )
                axes[0, j].set_title(f"ratio {ratio:g}")
                axes[0, j].set_xlabel("prompt kind")
                axes[0, j].set_ylabel("mode" if j == 0 else "")
        caption = (
            f"Test {escape_latex(metric)} per generation mode and prompt kind"
            f" ({caption_axes(task=task, model=model, protocol=protocol, real_fraction=rf)}), mean"
            f" over seeds, one panel per synthetic:real ratio ({direction_text(metric)};"
            " brighter is better)."
        )
        name = f"heatmap-{slug(task, model, protocol, 'rf' + axis_value('real_fraction', rf))}"
        plots.append(Plot(name, fig, caption, "downstream"))
    return plots
