"""Seaborn figures for the report, drawn from the tidy frames of `reports.collect`.

Each `*_figures` function returns one `Plot` per figure the data supports and nothing for the
rest: a figure that would be empty or say nothing (no curves, a single ratio, one prompt kind,
no fidelity runs) is skipped, never drawn blank. Figures are `matplotlib.figure.Figure` objects
on an Agg canvas, never pyplot's global state, so a report made inside a long sweep process
opens no window and leaks no figure. `write_figures` saves them with the sample grids of
`reports.sample_figures`; both build on `reports.figure_layout`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.axes import (
    BASELINE_LABEL,
    FIDELITY_COLUMNS,
    FIDELITY_REFERENCES,
    RECIPE_FIELDS,
    axis_value,
    cell_ids,
    display_order,
    is_higher_better,
    slug,
    usable_runs,
)
from reports.figure_layout import FULL_WIDTH, PANEL_HEIGHT, Plot, ReportFigure
from reports.latex import escape_latex
from reports.sample_figures import sample_figures
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


# ----------------------------------------------------------------------------- helpers


@contextmanager
def _style() -> Iterator[None]:
    # Context managers, not sns.set_theme: a report must not change the caller's rcParams.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        yield


def _figure(
    nrows: int, ncols: int, width: float | None = None, height: float | None = None, **kwargs
) -> tuple[Figure, np.ndarray]:
    width = width or min(FULL_WIDTH, 3.0 * ncols + 0.7)
    fig = Figure(figsize=(width, height or PANEL_HEIGHT * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def mode_label(mode: str) -> str:
    """A mode as figures and tables name it: the real-only baseline reads "real only"."""
    return BASELINE_LABEL if mode == BASELINE_MODE else str(mode)


def mode_palette(modes: Iterable[str]) -> dict[str, tuple]:
    """One colour per mode label, the same in every figure of a report; the baseline is grey."""
    order = [m for m in display_order("mode", modes) if m != BASELINE_MODE]
    colours = sns.color_palette("colorblind", max(len(order), 1))
    palette = {mode_label(m): colours[i] for i, m in enumerate(order)}
    palette[BASELINE_LABEL] = (0.35, 0.35, 0.35)
    return palette


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(mode_label=df["mode"].map(mode_label))


def _hue_order(df: pd.DataFrame) -> list[str]:
    return [mode_label(m) for m in display_order("mode", df["mode"])]


def _primary(df: pd.DataFrame) -> str | None:
    names = pd.unique(df["primary_metric"].dropna())
    return str(names[0]) if len(names) == 1 else None


def _where(**axes: object) -> str:
    """`task seg, model unet` for a caption (escaped)."""
    return ", ".join(
        f"{k.replace('_', ' ')} {escape_latex(axis_value(k, v))}" for k, v in axes.items()
    )


def _direction(metric: str) -> str:
    return "higher is better" if is_higher_better(metric) else "lower is better"


# ----------------------------------------------------------------------------- figures


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
    data = _with_labels(curves.merge(runs[cols], on="run_id"))
    palette = palette or mode_palette(runs["mode"])
    plots = []
    for (task, model), d in data.groupby(["task", "model"], sort=True):
        metric = _primary(d)
        # A curve needs two epochs; a single point per run has no shape to show.
        if metric is None or d.groupby("run_id")["step"].nunique().max() < 2:
            continue
        cells = d[d["mode"] != BASELINE_MODE]
        protocols = display_order("protocol", cells["protocol"]) or ["mix"]
        fractions = display_order("real_fraction", d["real_fraction"])
        with _style():
            fig, axes = _figure(len(fractions), len(protocols), sharex=True, sharey=True)
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
                        hue_order=[h for h in _hue_order(d) if h in set(panel["mode_label"])],
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
            f"Validation {escape_latex(metric)} per epoch ({_where(task=task, model=model)}),"
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
    runs = _with_labels(usable_runs(runs))
    palette = palette or mode_palette(runs["mode"])
    plots = []
    for (task, model), d in runs.groupby(["task", "model"], sort=True):
        metric = _primary(d)
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
        with _style():
            fig, axes = _figure(len(protocols), len(fractions), sharex=True, sharey=True)
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
                            hue_order=[h for h in _hue_order(cells) if h in set(panel.mode_label)],
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
                _hue_order(d),
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
            f"Test {escape_latex(metric)} ({_direction(metric)}) against the synthetic:real"
            f" ratio ({_where(task=task, model=model)}): mean $\\pm$ std over seeds per"
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
    runs = _with_labels(usable_runs(runs))
    prompted = runs[runs["prompt"] != "-"]
    plots = []
    cells = prompted[prompted["mode"] != BASELINE_MODE]
    axes_ = ["task", "model", "protocol", "real_fraction"]
    for (task, model, protocol, rf), group in cells.groupby(axes_, sort=True):
        metric = _primary(group)
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
        with _style():
            fig, axes = _figure(
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
                rows = [r for r in _hue_order(panel) if r in table.index]
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
            f" ({_where(task=task, model=model, protocol=protocol, real_fraction=rf)}), mean"
            f" over seeds, one panel per synthetic:real ratio ({_direction(metric)};"
            " brighter is better)."
        )
        name = f"heatmap-{slug(task, model, protocol, 'rf' + axis_value('real_fraction', rf))}"
        plots.append(Plot(name, fig, caption, "downstream"))
    return plots


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
    runs = _with_labels(usable_runs(runs))
    runs = runs[runs["run_id"].isin(per_patient["run_id"])]
    palette = palette or mode_palette(runs["mode"])
    plots = []
    for (task, model, rf), d in runs.groupby(["task", "model", "real_fraction"], sort=True):
        metric = _primary(d)
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
        with _style():
            fig, axes = _figure(nrows, ncols, sharex=True, sharey=True)
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
            f" ({_where(task=task, model=model, real_fraction=rf)}), after Bland and Altman:"
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
        metric = _primary(d)
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
            points = _with_labels(score.merge(fid, on=keys))
            if len(points) < 2:
                continue
            shown = [m for m in metrics if points[m].notna().any()]
            fractions = points["real_fraction"].nunique() > 1
            points["real fraction"] = points["real_fraction"].map("{:g}".format)
            ncols = min(len(shown), 3)
            with _style():
                fig, axes = _figure(-(-len(shown) // ncols), ncols, sharey=True)
                for ax, m in zip(axes.ravel(), shown):
                    sns.scatterplot(
                        points,
                        x=m,
                        y=metric,
                        hue="mode_label",
                        hue_order=_hue_order(points),
                        style="real fraction" if fractions else None,
                        palette=palette,
                        s=40,
                        ax=ax,
                        legend=ax is axes[0, 0],
                    )
                    if m in refs:
                        ax.axvline(refs[m], color="0.5", linestyle="--", linewidth=0.8)
                    ax.set_xlabel(f"{FIDELITY_COLUMNS[m]} ({_direction(m)})")
                    ax.set_ylabel(f"test {metric}")
                for ax in axes.ravel()[len(shown) :]:
                    ax.set_visible(False)
                if axes[0, 0].get_legend() is not None:
                    sns.move_legend(axes[0, 0], "best", title=None, fontsize="small")
            where = {"task": task, "model": model}
            if points["real_fraction"].nunique() == 1:
                where["real_fraction"] = points["real_fraction"].iloc[0]
            caption = (
                f"Test {escape_latex(metric)} ({_where(**where)}) against the"
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


# ----------------------------------------------------------------------------- writing


def _stages(runs: pd.DataFrame) -> list[str] | None:
    """Cell stage folders of the usable runs; None when the runs do not name them."""
    if "stage" not in runs.columns:
        return None
    stages = usable_runs(runs)["stage"].dropna()
    return list(stages) if len(stages) else None


def write_figures(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out_dir: str | Path,
    *,
    fidelity: pd.DataFrame | None = None,
    per_patient: pd.DataFrame | None = None,
    run_dir: str | Path | None = None,
) -> list[ReportFigure]:
    """Draw every figure the data supports into `out_dir` (plots as PDF, sample grids as PNG)
    and return them in report order. `per_patient` (`collect_per_patient`) enables the EF
    agreement plots, `run_dir` (the sweep's folder) the sample grids."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modes = runs["mode"] if fidelity is None else pd.concat([runs["mode"], fidelity["mode"]])
    palette = mode_palette(modes.dropna())
    plots = [
        *ratio_figures(runs, palette),
        *heatmap_figures(runs),
        *agreement_figures(runs, per_patient, palette),
        *curve_figures(runs, curves, palette),
        *fidelity_figures(runs, fidelity, palette),
        *sample_figures(Path(run_dir) if run_dir else None, _stages(runs)),
    ]
    written = []
    for plot in plots:
        path = out / f"{plot.name}.{'png' if plot.raster else 'pdf'}"
        # No creation date in the PDF: an unchanged report gives an unchanged file.
        meta = None if plot.raster else {"CreationDate": None}
        plot.figure.savefig(path, dpi=200, bbox_inches="tight", metadata=meta)
        width = round(min(1.0, plot.figure.get_figwidth() / FULL_WIDTH), 2)
        written.append(ReportFigure(path, plot.caption, f"fig:{plot.name}", plot.section, width))
    return written
