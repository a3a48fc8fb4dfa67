"""LaTeX results tables (booktabs, via pandas' Styler) from the tidy frames of `reports.collect`.

Every entry is `mean $\\pm$ std` over seeds (the mean alone for a single seed), the best entry of
each column is bold, and, where per-sample values exist, an entry is marked when it differs
significantly from the real-only baseline (`reports.stats.compare_to_baseline`).
Only runs with status `ok` enter a table; a cell logged twice for one seed counts once (latest).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reports.axes import (
    BASELINE_LABEL,
    FIDELITY_COLUMNS,
    FIDELITY_REFERENCES,
    JUDGES,
    MASK_DICE_COLUMNS,
    RECIPE_FIELDS,
    axis_value,
    is_higher_better,
    label_value,
    slug,
    sort_key,
    sort_keys,
    usable_runs,
)
from reports.latex import BETTER_MARK, WORSE_MARK, decimals_for, entry, escape_latex
from reports.stats import (
    BASELINE_MODE,
    compare_to_baseline,
    is_baseline,
    match_baselines,
    summarise,
)

ALPHA = 0.05
# Axes a baseline run shares with the cells compared to it; it has no mode, ratio or protocol
# of its own, so it belongs to every slice along those.
_BASELINE_SHARED = ("task", "model", "real_fraction", "prompt")
_CELL_AXES = ("task", "model", "real_fraction", "protocol", "mode", "ratio", "prompt")


@dataclass
class _Grid:
    """Summaries laid out as the table shows them (raw, unescaped labels)."""

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    higher: list[bool]  # per column
    decimals: list[int]  # per column
    marks: pd.DataFrame

    def best(self) -> pd.DataFrame:
        """True at the best entry of each column (ties at the printed precision all win); a
        column with fewer than two entries has nothing to win against and stays plain."""
        best = pd.DataFrame(False, index=self.mean.index, columns=self.mean.columns)
        for j, col in enumerate(self.mean.columns):
            vals = self.mean[col].astype(float).where(self.n[col] > 0).round(self.decimals[j])
            if vals.notna().sum() >= 2:
                best[col] = vals == (vals.max() if self.higher[j] else vals.min())
        return best

    def spread_note(self, over: str = "seeds") -> str:
        n = self.n.to_numpy(dtype=float).ravel()
        n = n[n > 0]
        if not n.size:
            return ""
        lo, hi = int(n.min()), int(n.max())
        span = f"{lo}" if lo == hi else f"{lo}$--${hi}"
        single = (
            f" (an entry from a single {over.rstrip('s')} shows the mean only)" if lo == 1 else ""
        )
        return rf" Mean $\pm$ std over {over}, $n={span}${single}."

    def direction_note(self) -> str:
        lower = [str(c) for c, h in zip(self.mean.columns, self.higher) if not h]
        if not lower:
            return " Bold: best per column (higher is better)."
        if len(lower) == len(self.higher):
            return " Bold: best per column (lower is better)."
        return f" Bold: best per column (lower is better for {escape_latex(', '.join(lower))})."

    def to_latex(self, corner: str, caption: str, label: str) -> str:
        """A complete booktabs `table` environment; escapes all labels."""
        rows, cols = range(self.mean.shape[0]), range(self.mean.shape[1])
        cells = [
            [
                entry(
                    self.mean.iat[i, j],
                    self.std.iat[i, j],
                    self.n.iat[i, j],
                    self.decimals[j],
                    self.marks.iat[i, j],
                )
                for j in cols
            ]
            for i in rows
        ]
        index = [escape_latex(r) for r in self.mean.index]
        columns = pd.Index([escape_latex(c) for c in self.mean.columns], name=escape_latex(corner))
        display = pd.DataFrame(cells, index=index, columns=columns)
        # Styler prints the columns' name in the header row's first cell: the table's corner.
        props = np.where(self.best().to_numpy(), "textbf:--rwrap;", "")
        styler = display.style.apply(lambda _: props, axis=None)
        return styler.to_latex(
            hrules=True,
            caption=caption,
            label=re.sub(r"[^A-Za-z0-9:.-]+", "-", label),
            position_float="centering",
            column_format="l" + "c" * display.shape[1],
        )


# ----------------------------------------------------------------------------- run selection


def _is_baseline(df: pd.DataFrame) -> pd.Series:
    if "mode" not in df.columns:
        return pd.Series(False, index=df.index)
    return is_baseline(df)


def _slice(df: pd.DataFrame, **fixed) -> pd.DataFrame:
    """Runs matching `fixed` axis values (None: no filter). Baseline runs are filtered only on
    the axes they share with cells, so the real-only reference appears in every slice."""
    keep = pd.Series(True, index=df.index)
    base = _is_baseline(df)
    for axis, value in fixed.items():
        if value is not None:
            match = df[axis] == value
            keep &= match if axis in _BASELINE_SHARED else match | base
    return df[keep]


def _resolve(df: pd.DataFrame, axis: str, value: object, table: str) -> object:
    """`value`, or the one value `axis` takes in `df` (its cells, else its baselines)."""
    if value is not None:
        return value
    cells = df[~_is_baseline(df)]
    values = (cells if len(cells) else df)[axis].dropna()
    distinct = sorted(pd.unique(values), key=lambda v: sort_key(axis, v))
    if len(distinct) > 1:
        raise ValueError(f"{table}: {axis} varies {distinct}; pass {axis}= to pick one")
    return distinct[0] if distinct else None


def _primary_metric(df: pd.DataFrame, table: str) -> str:
    names = pd.unique(df["primary_metric"].dropna())
    if len(names) != 1:
        raise ValueError(f"{table}: need one primary_metric, found {list(names)}; pass metric=")
    return str(names[0])


def _check_unique(runs: pd.DataFrame, by: list[str]) -> None:
    """Each table entry must summarise one cell; pooling different cells would be silent.

    A cell is its axes without the seed (a cell key names the seed too, `...-s0`, so counting
    keys would take the seeds of one cell for different cells)."""
    axes = [a for a in _CELL_AXES if a in runs.columns]
    if not axes or runs.empty:
        return
    counts = runs[by + axes].drop_duplicates().groupby(by, observed=True).size()
    bad = counts[counts > 1]
    if len(bad):
        key = bad.index[0]
        group = runs[(runs[by] == pd.Series(key, index=by)).all(axis=1)]
        varying = [a for a in axes if group[a].nunique(dropna=False) > 1]
        raise ValueError(
            f"table entry {key} pools {bad.iloc[0]} different cells (varying: {varying});"
            " filter the runs to one slice first"
        )


def _canonical(df: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Baseline first, then the given axes in display order."""
    keys = list(zip(~_is_baseline(df), *(sort_keys(df[a], a) for a in axes)))
    order = sorted(range(len(df)), key=keys.__getitem__)
    return df.iloc[order]


def _row_labels(df: pd.DataFrame, axes: Sequence[str], always: int = 1) -> pd.Series:
    """An ordered categorical row label per run: the first `always` of `axes`, then those others
    that vary among the cells (`_constants` names the rest for the caption); a baseline reads
    "real only" plus its shared axes that vary (the vlseg prompt). "-" (no prompt) is omitted."""
    base = _is_baseline(df)
    varying = [*axes[:always], *(a for a in axes[always:] if df.loc[~base, a].nunique() > 1)]
    shared = [a for a in axes if a in _BASELINE_SHARED and df[a].nunique() > 1]

    def label(row: pd.Series) -> str:
        if row["mode"] == BASELINE_MODE:
            axes_shown, parts = shared, [BASELINE_LABEL]
        else:
            axes_shown, parts = list(dict.fromkeys(varying + shared)), []
        return ", ".join(parts + [label_value(a, row[a]) for a in axes_shown if row[a] != "-"])

    if df.empty:
        return pd.Series(pd.Categorical([]), index=df.index)
    # Positional index: a caller's frame may carry duplicate index labels.
    ordered = _canonical(df.reset_index(drop=True), axes)
    labels = ordered.apply(label, axis=1)
    cats = pd.Categorical(labels, categories=pd.unique(labels), ordered=True)
    return pd.Series(cats, index=ordered.index).sort_index().set_axis(df.index)


def _constants(df: pd.DataFrame, axes: Sequence[str], always: int = 1) -> str:
    """` Synthetic cells: mode semantic, ratio 1.` for the axes `_row_labels` leaves out because
    they do not vary among the cells (empty when there are none)."""
    cells = df[~_is_baseline(df)]
    fixed = {a: cells[a].iloc[0] for a in axes[always:] if len(cells) and cells[a].nunique() == 1}
    fixed = {a: v for a, v in fixed.items() if v != "-"}
    return f" Synthetic cells: {_describe(**fixed)}." if fixed else ""


def _describe(**axes: object) -> str:
    """`model clipseg, real fraction 0.25` for a caption (escaped)."""
    return ", ".join(
        f"{k.replace('_', ' ')} {escape_latex(axis_value(k, v))}" for k, v in axes.items()
    )


def _rf(real_fraction: object) -> str:
    return "rf" + axis_value("real_fraction", real_fraction)


# ----------------------------------------------------------------------------- tables


def pivot_table_tex(
    df: pd.DataFrame,
    per_sample: pd.DataFrame | None,
    index: str | Sequence[str],
    columns: str,
    metric: str,
    caption: str,
    label: str,
    higher_is_better: bool | None = None,
    *,
    corner: str | None = None,
    decimals: int | None = None,
    alpha: float = ALPHA,
) -> str:
    """`metric` pivoted to rows `index` x columns `columns`, as a LaTeX `table` environment.

    `df` holds the runs to show (collect_runs' frame, filtered to one slice), real-only
    baselines included: they are the reference of the significance test. Each entry must come
    from a single cell, else ValueError. A categorical `index` keeps its category order; other
    axes use their display order (mode and protocol as in the design, numbers and P0-P7
    ascending). `caption` is LaTeX and is not escaped; row/column labels are. A note on the
    statistics is appended to the caption.
    `higher_is_better=None` infers the direction from the metric name (`is_higher_better`);
    `decimals=None` picks 1-4 decimals from the magnitude of the values.
    With `per_sample`, an entry is marked `$^{*}$` (significantly better than the baseline) or
    `$^{\\dagger}$` (significantly worse): two-sided paired Wilcoxon signed-rank test on
    per-sample values averaged over seeds, Holm-adjusted p < `alpha` over all tests in the table.
    """
    if metric not in df.columns:
        raise ValueError(f"metric {metric!r} not among the run columns")
    higher = is_higher_better(metric) if higher_is_better is None else higher_is_better
    index = [index] if isinstance(index, str) else list(index)
    runs = usable_runs(df)

    # Raw row/column labels per run, in display order.
    combos = runs[index].drop_duplicates()
    keys = list(zip(*(sort_keys(combos[a], a) for a in index)))
    combos = combos.iloc[sorted(range(len(combos)), key=lambda i: keys[i])]

    def join(frame: pd.DataFrame) -> list[str]:
        return [", ".join(axis_value(a, v) for a, v in zip(index, r)) for r in frame.to_numpy()]

    col_values = sorted(pd.unique(runs[columns]), key=lambda v: sort_key(columns, v))
    runs = runs.assign(_row=join(runs[index]), _col=[axis_value(columns, v) for v in runs[columns]])
    _check_unique(runs, ["_row", "_col"])
    row_order, col_order = join(combos), [axis_value(columns, v) for v in col_values]

    summary = summarise(runs, ["_row", "_col"], metric)

    def grid(field: str) -> pd.DataFrame:
        wide = summary.pivot(index="_row", columns="_col", values=field)
        return wide.reindex(index=row_order, columns=col_order)

    marks = pd.DataFrame("", index=row_order, columns=col_order)
    n_tests = 0
    if per_sample is not None and len(per_sample) and "mode" in runs.columns:
        tests = compare_to_baseline(runs, per_sample, ["_row", "_col"], metric)
        tests = tests[tests["p_holm"].notna()]
        n_tests = len(tests)
        for t in tests.to_dict("records"):
            if t["p_holm"] < alpha and t["direction"] != 0:
                good = (t["direction"] > 0) == higher
                marks.loc[t["_row"], t["_col"]] = BETTER_MARK if good else WORSE_MARK

    mean = grid("mean")
    dec = decimals if decimals is not None else decimals_for(mean.to_numpy(dtype=float).ravel())
    g = _Grid(
        mean=mean,
        std=grid("std"),
        n=grid("n").fillna(0),
        higher=[higher] * len(col_order),
        decimals=[dec] * len(col_order),
        marks=marks,
    )
    note = g.spread_note() + g.direction_note()
    if n_tests:
        note += (
            f" {BETTER_MARK}/{WORSE_MARK}: significantly better/worse than the real-only baseline"
            " (two-sided paired Wilcoxon signed-rank test on per-sample test values averaged"
            f" over seeds; Holm-adjusted $p<{alpha:g}$ over the {n_tests} test"
            f"{'s' if n_tests > 1 else ''} in this table)."
        )
    corner = corner if corner is not None else f"{', '.join(index)} / {columns}"
    return g.to_latex(corner, caption.rstrip() + note, label)


def _metrics_table(
    runs: pd.DataFrame,
    index: str,
    metrics: dict[str, str],
    caption: str,
    label: str,
    higher: dict[str, bool] | None = None,
    over: str = "seeds",
) -> str:
    """Rows `index` (an ordered categorical), one column per metric (name -> header), each
    `mean ± std` over the runs of a row, with its own direction and decimals. No tests: these
    are per-run quantities without per-sample values."""
    higher = higher or {}
    rows = [c for c in runs[index].cat.categories if c in set(runs[index])]
    parts = {f: [] for f in ("mean", "std", "n")}
    for m in metrics:
        s = summarise(runs, index, m).set_index(index).reindex(rows)
        for f in parts:
            parts[f].append(s[f].rename(metrics[m]))
    mean = pd.concat(parts["mean"], axis=1)
    g = _Grid(
        mean=mean,
        std=pd.concat(parts["std"], axis=1),
        n=pd.concat(parts["n"], axis=1).fillna(0),
        higher=[higher.get(m, is_higher_better(m)) for m in metrics],
        decimals=[decimals_for(mean[c].to_numpy(dtype=float)) for c in mean.columns],
        marks=pd.DataFrame("", index=mean.index, columns=mean.columns),
    )
    return g.to_latex(index, caption.rstrip() + g.spread_note(over) + g.direction_note(), label)


def sb_table(
    df: pd.DataFrame,
    per_sample: pd.DataFrame | None,
    model: str,
    *,
    real_fraction: float | None = None,
    metric: str | None = None,
) -> str:
    """SB's table for one vlseg model: rows the training strategy (real only, then each protocol,
    with generation mode and ratio when they vary), columns the prompt kind P0-P7."""
    runs = _slice(usable_runs(df), task="vlseg", model=model)
    if runs.empty:
        raise ValueError(f"sb_table: no vlseg runs for model {model!r}")
    rf = _resolve(runs, "real_fraction", real_fraction, "sb_table")
    runs = _slice(runs, real_fraction=rf)
    metric = metric or _primary_metric(runs, "sb_table")
    axes = ["protocol", "mode", "ratio"]
    runs = runs.assign(strategy=_row_labels(runs, axes))
    caption = (
        f"Vision-language segmentation ({_describe(model=model, real_fraction=rf)}): test "
        f"{escape_latex(metric)} on the real test set per training strategy and prompt kind."
        + _constants(runs, axes)
    )
    return pivot_table_tex(
        runs,
        per_sample,
        "strategy",
        "prompt",
        metric,
        caption,
        f"tab:sb-{slug(model, _rf(rf))}",
        corner="strategy / prompt",
    )


def de_table(
    df: pd.DataFrame,
    per_sample: pd.DataFrame | None,
    task: str,
    *,
    model: str | None = None,
    protocol: str = "mix",
    real_fraction: float | None = None,
    metric: str | None = None,
) -> str:
    """DE's table for one task: rows the generation mode (with the prompt kind where it varies),
    columns the synthetic:real ratio, entries the task's primary metric."""
    runs = _slice(usable_runs(df), task=task)
    if runs.empty:
        raise ValueError(f"de_table: no runs for task {task!r}")
    model = _resolve(runs, "model", model, "de_table")
    rf = _resolve(_slice(runs, model=model), "real_fraction", real_fraction, "de_table")
    runs = _slice(runs, model=model, real_fraction=rf, protocol=protocol)
    metric = metric or _primary_metric(runs, "de_table")
    runs = runs.assign(generator=_row_labels(runs, ["mode", "prompt"], always=2))
    where = _describe(model=model, protocol=protocol, real_fraction=rf)
    caption = (
        f"Task {escape_latex(task)} ({where}): test {escape_latex(metric)} on the real test set"
        " per generation mode and synthetic:real ratio."
    )
    return pivot_table_tex(
        runs,
        per_sample,
        "generator",
        "ratio",
        metric,
        caption,
        f"tab:de-{slug(task, model, protocol, _rf(rf))}",
        corner="mode / ratio",
    )


def convergence_table(
    df: pd.DataFrame,
    task: str,
    *,
    model: str | None = None,
    real_fraction: float | None = None,
) -> str:
    """Convergence per cell: epochs_to_95, val_auc and the speed-up over the real-only
    baseline, baseline epochs_to_95 / cell epochs_to_95 for the same seed (1 for the baseline)."""
    runs = _slice(usable_runs(df), task=task)
    model = _resolve(runs, "model", model, "convergence_table")
    rf = _resolve(_slice(runs, model=model), "real_fraction", real_fraction, "convergence_table")
    runs = _slice(runs, model=model, real_fraction=rf)
    if "epochs_to_95" not in runs.columns or runs["epochs_to_95"].isna().all():
        raise ValueError(f"convergence_table: no epochs_to_95 for task {task!r}")
    epochs = runs.set_index("run_id")["epochs_to_95"]
    pairs = match_baselines(runs).set_index("run_id")["baseline_run_id"]
    base_epochs = pairs.map(epochs).reindex(runs["run_id"]).to_numpy(dtype=float)
    speedup = np.where(_is_baseline(runs), 1.0, base_epochs / runs["epochs_to_95"].to_numpy())
    axes = ["mode", "protocol", "ratio", "prompt"]
    runs = runs.assign(
        speedup=np.where(runs["epochs_to_95"].notna(), speedup, np.nan),
        cell=_row_labels(runs, axes),
    )
    metrics = {"epochs_to_95": "epochs to 95%", "val_auc": "val. AUC", "speedup": "speed-up"}
    metrics = {m: h for m, h in metrics.items() if m in runs.columns}
    caption = (
        f"Convergence, task {escape_latex(task)} ({_describe(model=model, real_fraction=rf)}):"
        r" epochs to reach 95\% of the best validation score, area under the validation curve,"
        r" and speed-up = baseline epochs / cell epochs (same seed; 1 for the real-only run)."
        + _constants(runs, axes)
    )
    label = f"tab:convergence-{slug(task, model, _rf(rf))}"
    return _metrics_table(runs, "cell", metrics, caption, label, {"speedup": True})


# Per-structure columns of the segmentation tasks, in table order; distances in mm where the
# test images had a pixel spacing, else in pixels.
STRUCTURE_COLUMNS = {
    "dice_lv": "Dice LV",
    "dice_myo": "Dice MYO",
    "dice_la": "Dice LA",
    "dice_mean": "Dice mean",
}
DISTANCE_COLUMNS = {"hd95": "HD95", "assd": "ASSD"}
CLINICAL_COLUMNS = {"ef_mae": "EF MAE", "ef_corr": "EF r"}


def structures_table(
    df: pd.DataFrame,
    task: str,
    *,
    model: str | None = None,
    real_fraction: float | None = None,
) -> str:
    """Per-structure test scores of a segmentation task (seg or vlseg), one row per cell: Dice
    of LV, myocardium and atrium and their mean, then the mean HD95 and ASSD over structures
    (mm when every run measured them in mm, else pixels) and, where every run has them, the
    ejection fraction's error and correlation (`downstream.volumes`): the layout of CAMUS and
    nnU-Net reports."""
    runs = _slice(usable_runs(df), task=task)
    if runs.empty:
        raise ValueError(f"structures_table: no runs for task {task!r}")
    model = _resolve(runs, "model", model, "structures_table")
    rf = _resolve(_slice(runs, model=model), "real_fraction", real_fraction, "structures_table")
    runs = _slice(runs, model=model, real_fraction=rf)
    metrics = {m: h for m, h in STRUCTURE_COLUMNS.items() if _logged(runs, m)}
    if "dice_lv" not in metrics:
        raise ValueError(f"structures_table: no per-structure Dice for task {task!r}")
    # One unit for the whole table: mm only if every run measured in mm.
    mm = all(_logged(runs, f"{name}_mm_mean", every=True) for name in DISTANCE_COLUMNS)
    suffix, unit = ("_mm", "mm") if mm else ("", "px")
    distances = {f"{n}{suffix}_mean": f"{h} ({unit})" for n, h in DISTANCE_COLUMNS.items()}
    metrics |= {m: h for m, h in distances.items() if _logged(runs, m)}
    clinical = {m: h for m, h in CLINICAL_COLUMNS.items() if _logged(runs, m, every=True)}
    metrics |= clinical
    axes = ["mode", "protocol", "ratio", "prompt"]
    runs = runs.assign(cell=_row_labels(runs, axes))
    ef = ""
    if clinical:
        ef = " " + " and ".join(
            {
                "ef_mae": "EF MAE: the mean absolute error of the ejection fraction in points",
                "ef_corr": "EF r: its Pearson correlation",
            }[m]
            for m in clinical
        )
        ef += (
            ", from Simpson's biplane volumes of the predicted and the reference label maps"
            " per test patient."
        )
    distance_note = (
        " HD95 and ASSD (average symmetric surface distance) are means over the three"
        f" structures, in {'mm' if mm else 'pixels'}."
        if any(m in metrics for m in distances)
        else ""
    )
    caption = (
        f"Per-structure scores, task {escape_latex(task)}"
        f" ({_describe(model=model, real_fraction=rf)}), on the real test set."
        + distance_note
        + ef
        + _constants(runs, axes)
    )
    label = f"tab:structures-{slug(task, model, _rf(rf))}"
    return _metrics_table(runs, "cell", metrics, caption, label)


def _logged(runs: pd.DataFrame, metric: str, every: bool = False) -> bool:
    """Whether `metric` has a value in some run (in every run with `every`)."""
    if metric not in runs.columns:
        return False
    present = runs[metric].notna()
    return bool(present.all() if every else present.any())


def fidelity_table(fid: pd.DataFrame) -> str:
    """Synthetic-set fidelity per generation mode x prompt kind (from `collect_fidelity`), with
    the measuring recipe in the caption. Values with different recipes are not comparable, so
    `fid` must hold one recipe (`write_tables` splits by recipe)."""
    recipe_cols = [c for c in RECIPE_FIELDS if c in fid.columns]
    recipe = {}
    for c in recipe_cols:
        values = pd.unique(fid[c])
        if len(values) > 1:
            raise ValueError(f"fidelity_table: {c} varies {list(values)}; one recipe per table")
        recipe[RECIPE_FIELDS[c]] = values[0]
    columns = FIDELITY_COLUMNS | MASK_DICE_COLUMNS
    metrics = {m: h for m, h in columns.items() if m in fid and fid[m].notna().any()}
    if not metrics:
        raise ValueError("fidelity_table: no fidelity metrics logged")
    # The real fraction joins the row label where it varies: each fraction has its own set.
    if "real_fraction" not in fid:
        fid = fid.assign(real_fraction=np.nan)
    runs = fid.assign(generator=_row_labels(fid, ["mode", "prompt", "real_fraction"], always=2))
    if "recipe.weights_sha256" in recipe_cols:
        recipe["weights SHA-256"] = str(recipe["weights SHA-256"])[:12]
    described = "; ".join(f"{k} {escape_latex(v)}" for k, v in recipe.items())
    caption = (
        "Fidelity of the synthetic sets per generation mode and prompt kind: Fr\\'echet distance"
        " (FD) and KID to the real reference set, precision and recall, conditioning fidelity"
        " (accuracy with which view, phase and quality are recognised in the synthetic images)"
        " and mask Dice (agreement of an image with its label map: Dice between a real-trained"
        " segmenter's prediction on the image and the label, per structure and mean)."
        + (f" Recipe: {described}." if described else "")
        + _judged_note(fid)
    )
    label = "tab:fidelity" + (f"-{slug(*recipe.values())}" if recipe else "")
    # Repeated fidelity runs of one synthetic set are replicates, not training seeds.
    return _metrics_table(runs, "generator", metrics, caption, label, over="runs")


def _judged_note(fid: pd.DataFrame) -> str:
    """Caption sentences naming the real-trained judges (model, weights hash, epochs) and
    their real-image references, where the runs logged them and agree on one value."""

    def single(column: str) -> object | None:
        values = pd.unique(fid[column].dropna()) if column in fid else []
        return values[0] if len(values) == 1 else None

    parts = []
    for prefix, judge in JUDGES.items():
        model, sha = single(prefix), single(f"{prefix}_sha256")
        if model is not None:
            epochs = single(f"{prefix}_epochs")
            text = f"{judge} {escape_latex(model)}"
            text += f" (weights {str(sha)[:12]})" if sha is not None else ""
            text += f", {epochs} epochs on the real training split" if epochs is not None else ""
            parts.append(text)
    note = f" Judges: {'; '.join(parts)}." if parts else ""
    refs = []
    for column, what in FIDELITY_REFERENCES.items():
        value = single(column)
        if value is not None:
            refs.append(f"{what} {float(value):.3f}")
    return note + (f" References: {'; '.join(refs)}." if refs else "")


def write_tables(
    df: pd.DataFrame,
    per_sample: pd.DataFrame | None,
    out_dir: str | Path,
    *,
    fidelity: pd.DataFrame | None = None,
) -> list[Path]:
    """Write every table the data supports as `<name>.tex` in `out_dir`; return the paths.

    sb: per (model, real fraction) when vlseg runs have prompts; de: per (task, model, protocol,
    real fraction) with at least one synthetic cell; structures: per (segmentation task, model,
    real fraction) with per-structure Dice; convergence: per (task, model, real fraction) where
    epochs_to_95 was logged; fidelity: per recipe when `fidelity` has rows.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = usable_runs(df)
    written: list[Path] = []

    def emit(name: str, tex: str) -> None:
        path = out / f"{name}.tex"
        path.write_text(tex)
        written.append(path)

    def combos(frame: pd.DataFrame, axes: list[str]) -> list[tuple]:
        return sorted(frame[axes].drop_duplicates().itertuples(index=False, name=None), key=str)

    cells = runs[~_is_baseline(runs)]
    vl = runs[(runs["task"] == "vlseg") & (runs["prompt"] != "-")]
    for model, rf in combos(vl, ["model", "real_fraction"]):
        emit(
            f"sb-{slug(model, _rf(rf))}",
            sb_table(runs, per_sample, model, real_fraction=rf),
        )
    for task, model, protocol, rf in combos(cells, ["task", "model", "protocol", "real_fraction"]):
        tex = de_table(runs, per_sample, task, model=model, protocol=protocol, real_fraction=rf)
        emit(f"de-{slug(task, model, protocol, _rf(rf))}", tex)
    if "dice_lv" in runs.columns:
        parts = runs[runs["task"].isin(["seg", "vlseg"]) & runs["dice_lv"].notna()]
        for task, model, rf in combos(parts, ["task", "model", "real_fraction"]):
            tex = structures_table(runs, task, model=model, real_fraction=rf)
            emit(f"structures-{slug(task, model, _rf(rf))}", tex)
    if "epochs_to_95" in runs.columns:
        timed = runs[runs["epochs_to_95"].notna()]
        for task, model, rf in combos(timed, ["task", "model", "real_fraction"]):
            tex = convergence_table(runs, task, model=model, real_fraction=rf)
            emit(f"convergence-{slug(task, model, _rf(rf))}", tex)
    if fidelity is not None and len(fidelity):
        recipe_cols = [c for c in RECIPE_FIELDS if c in fidelity.columns]
        groups = fidelity.groupby(recipe_cols, dropna=False) if recipe_cols else [((), fidelity)]
        for i, (_, group) in enumerate(groups):
            emit("fidelity" + (f"-{i + 1}" if i else ""), fidelity_table(group))
    return written
