"""The layout the results tables share (booktabs LaTeX, via pandas' Styler).

Selecting a table's runs (`slice_runs`, `resolve_axis`: the real-only baseline belongs to every
slice along the axes it lacks), row labels and caption notes, and the two table shapes:
`pivot_table_tex` (one metric, rows x columns, with significance marks) and `metrics_table`
(one column per metric). Every entry is `mean $\\pm$ std` over seeds (the mean alone for a
single seed) and the best entry of each column is bold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.axes import (
    BASELINE_LABEL,
    CELL_AXES,
    axis_value,
    is_higher_better,
    label_value,
    sort_key,
    sort_keys,
    usable_runs,
)
from reports.latex import BETTER_MARK, WORSE_MARK, decimals_for, entry, escape_latex
from reports.stats import (
    BASELINE_MODE,
    compare_to_baseline,
    holm,
    is_baseline,
    summarise,
)

ALPHA = 0.05
# `significance.csv`'s columns: one row per paired test behind a table's marks. `row` and
# `column` are the entry's labels as the table prints them (unescaped); `unit` is what a pair
# is (`reports.stats.TEST_UNITS`); `p_holm` is adjusted over the tests of the row's table (one
# table, one family); `ci_low`, `ci_high`: the 95 % bootstrap interval of `mean_diff`
# (`reports.stats.WilcoxonResult`); `verdict` is the entry's mark.
SIGNIFICANCE_COLUMNS = [
    "row",
    "column",
    "metric",
    "unit",
    "n_pairs",
    "n_seeds",
    "statistic",
    "p_value",
    "p_holm",
    "direction",
    "median_diff",
    "mean_diff",
    "ci_low",
    "ci_high",
    "verdict",
]
VERDICTS = {BETTER_MARK: "better", WORSE_MARK: "worse", "": "n.s."}
# Axes a baseline run shares with the cells compared to it; it has no mode, ratio or protocol
# of its own, so it belongs to every slice along those.
_BASELINE_SHARED = ("task", "model", "real_fraction", "prompt")


@dataclass
class _Grid:
    """Summaries laid out as the table shows them (raw, unescaped labels)."""

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    higher: list[bool]  # per column
    decimals: list[int]  # per column
    marks: pd.DataFrame
    # Leading rows that are references, not competitors: never bold, ruled off below.
    unranked: tuple[str, ...] = ()
    # Per column, the value that anything below ranks as (None: none), e.g. 0 for KID.
    rank_floor: list[float | None] | None = None

    def best(self) -> pd.DataFrame:
        """True at the best entry of each column (ties at the printed precision all win); a
        column with fewer than two entries has nothing to win against and stays plain."""
        best = pd.DataFrame(False, index=self.mean.index, columns=self.mean.columns)
        ranked = ~self.mean.index.isin(self.unranked)
        floors = self.rank_floor or [None] * len(self.higher)
        for j, col in enumerate(self.mean.columns):
            vals = self.mean[col].astype(float).where((self.n[col] > 0) & ranked)
            if floors[j] is not None:
                vals = vals.clip(lower=floors[j])
            vals = vals.round(self.decimals[j])
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
        tex = styler.to_latex(
            hrules=True,
            caption=caption,
            label=re.sub(r"[^A-Za-z0-9:.-]+", "-", label),
            position_float="centering",
            column_format="l" + "c" * display.shape[1],
        )
        tex = _rule_after(tex, [escape_latex(r) for r in self.unranked if r in self.mean.index])
        return fit_to_width(tex)


# graphicx's \resizebox with the original width (\width) compared to the line's: a table
# wider than the text (the fidelity table's 12 columns, mean +- std entries) is scaled down
# to fit instead of running into the margin; a narrower one keeps its natural size.
_FIT = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"


def fit_to_width(tex: str) -> str:
    """``tex`` with its tabular shrunk to the line width where it is wider (graphicx)."""
    begin = tex.index(r"\begin{tabular}")
    end = tex.index(r"\end{tabular}") + len(r"\end{tabular}")
    return f"{tex[:begin]}{_FIT}\n{tex[begin:end]}}}{tex[end:]}"


def _rule_after(tex: str, first_rows: list[str]) -> str:
    """A \\midrule below the body rows labelled ``first_rows`` (the table's first ones)."""
    if not first_rows:
        return tex
    lines = tex.split("\n")
    body = lines.index("\\midrule") + 1
    at = body + len(first_rows)
    if [ln.split(" & ", 1)[0] for ln in lines[body:at]] != first_rows:
        raise ValueError(f"reference rows {first_rows} must come first")
    return "\n".join([*lines[:at], "\\midrule", *lines[at:]])


# ----------------------------------------------------------------------------- run selection


def baseline_rows(df: pd.DataFrame) -> pd.Series:
    if "mode" not in df.columns:
        return pd.Series(False, index=df.index)
    return is_baseline(df)


def slice_runs(df: pd.DataFrame, **fixed) -> pd.DataFrame:
    """Runs matching `fixed` axis values (None: no filter). Baseline runs are filtered only on
    the axes they share with cells, so the real-only reference appears in every slice."""
    keep = pd.Series(True, index=df.index)
    base = baseline_rows(df)
    for axis, value in fixed.items():
        if value is not None:
            match = df[axis] == value
            keep &= match if axis in _BASELINE_SHARED else match | base
    return df[keep]


def resolve_axis(df: pd.DataFrame, axis: str, value: object, table: str) -> object:
    """`value`, or the one value `axis` takes in `df` (its cells, else its baselines)."""
    if value is not None:
        return value
    cells = df[~baseline_rows(df)]
    values = (cells if len(cells) else df)[axis].dropna()
    distinct = sorted(pd.unique(values), key=lambda v: sort_key(axis, v))
    if len(distinct) > 1:
        raise ValueError(f"{table}: {axis} varies {distinct}; pass {axis}= to pick one")
    return distinct[0] if distinct else None


def primary_metric(df: pd.DataFrame, table: str) -> str:
    names = pd.unique(df["primary_metric"].dropna())
    if len(names) != 1:
        raise ValueError(f"{table}: need one primary_metric, found {list(names)}; pass metric=")
    return str(names[0])


def check_unique(runs: pd.DataFrame, by: list[str]) -> None:
    """Each table entry must summarise one cell; pooling different cells would be silent.

    A cell is its axes without the seed (`CELL_AXES`)."""
    axes = [a for a in CELL_AXES if a in runs.columns]
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


def canonical_order(df: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Baseline first, then the given axes in display order."""
    keys = list(zip(~baseline_rows(df), *(sort_keys(df[a], a) for a in axes)))
    order = sorted(range(len(df)), key=keys.__getitem__)
    return df.iloc[order]


def row_labels(df: pd.DataFrame, axes: Sequence[str], always: int = 1) -> pd.Series:
    """An ordered categorical row label per run: the first `always` of `axes`, then those others
    that vary among the cells (`constants_note` names the rest for the caption); a baseline reads
    "real only" plus its shared axes that vary (the vlseg prompt). "-" (no prompt) is omitted."""
    base = baseline_rows(df)
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
    ordered = canonical_order(df.reset_index(drop=True), axes)
    labels = ordered.apply(label, axis=1)
    cats = pd.Categorical(labels, categories=pd.unique(labels), ordered=True)
    return pd.Series(cats, index=ordered.index).sort_index().set_axis(df.index)


def constants_note(df: pd.DataFrame, axes: Sequence[str], always: int = 1) -> str:
    """` Synthetic cells: mode semantic, ratio 1.` for the axes `row_labels` leaves out because
    they do not vary among the cells (empty when there are none)."""
    cells = df[~baseline_rows(df)]
    fixed = {a: cells[a].iloc[0] for a in axes[always:] if len(cells) and cells[a].nunique() == 1}
    fixed = {a: v for a, v in fixed.items() if v != "-"}
    return f" Synthetic cells: {describe(**fixed)}." if fixed else ""


def describe(**axes: object) -> str:
    """`model clipseg, real fraction 0.25` for a caption (escaped)."""
    return ", ".join(
        f"{k.replace('_', ' ')} {escape_latex(axis_value(k, v))}" for k, v in axes.items()
    )


def rf_slug(real_fraction: object) -> str:
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
    tests: list[pd.DataFrame] | None = None,
    test_unit: str = "image",
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
    per-sample values averaged over seeds, paired by `test_unit` (test image or patient),
    Holm-adjusted p < `alpha` over all tests in the table.
    `tests`, when given, receives those tests as one frame of `SIGNIFICANCE_COLUMNS`.
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
    check_unique(runs, ["_row", "_col"])
    row_order, col_order = join(combos), [axis_value(columns, v) for v in col_values]

    summary = summarise(runs, ["_row", "_col"], metric)

    def grid(field: str) -> pd.DataFrame:
        wide = summary.pivot(index="_row", columns="_col", values=field)
        return wide.reindex(index=row_order, columns=col_order)

    marks = pd.DataFrame("", index=row_order, columns=col_order)
    n_tests = 0
    if per_sample is not None and len(per_sample) and "mode" in runs.columns:
        done = compare_to_baseline(runs, per_sample, ["_row", "_col"], metric, test_unit=test_unit)
        done = done[done["p_holm"].notna()].rename(columns={"_col": "_header"})
        done = done.assign(_up=higher, metric=metric, unit=test_unit)
        marks, done = _judged(done, alpha, row_order, col_order)
        n_tests = len(done)
        if tests is not None:
            tests.append(done)

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
    note = g.spread_note() + g.direction_note() + _tests_note(n_tests, alpha, test_unit)
    corner = corner if corner is not None else f"{', '.join(index)} / {columns}"
    return g.to_latex(corner, caption.rstrip() + note, label)


def _tests_note(n_tests: int, alpha: float, test_unit: str) -> str:
    if not n_tests:
        return ""
    pairs = (
        "per-sample test values"
        if test_unit == "image"
        else "per-patient test values (the mean over each test patient's images)"
    )
    return (
        f" {BETTER_MARK}/{WORSE_MARK}: significantly better/worse than the real-only baseline"
        f" (two-sided paired Wilcoxon signed-rank test on {pairs} averaged"
        f" over seeds; Holm-adjusted $p<{alpha:g}$ over the {n_tests} test"
        f"{'s' if n_tests > 1 else ''} in this table)."
    )


def _marks(tests: pd.DataFrame, alpha: float) -> list[str]:
    """Per test of `tests` (compare_to_baseline's columns, `p_holm` filled, and `_up`: whether
    higher is better for its metric): `BETTER_MARK`, `WORSE_MARK`, or "" when not significant."""
    out = []
    for t in tests.to_dict("records"):
        if t["p_holm"] < alpha and t["direction"] != 0:
            out.append(BETTER_MARK if (t["direction"] > 0) == t["_up"] else WORSE_MARK)
        else:
            out.append("")
    return out


def _judged(
    tests: pd.DataFrame, alpha: float, rows: list[str], columns: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The marks of a table's grid (`rows` x `columns`) from its `tests` (compare_to_baseline's
    columns, `p_holm` filled, with `_row`, `_header`, `_up`, `metric` and `unit`), and those
    tests as `SIGNIFICANCE_COLUMNS` in the order the table reads: by row, then by column."""
    tests = tests.assign(_mark=_marks(tests, alpha))
    marks = pd.DataFrame("", index=rows, columns=columns)
    for t in tests.to_dict("records"):
        marks.loc[t["_row"], t["_header"]] = t["_mark"]
    row_at = {r: i for i, r in enumerate(rows)}
    column_at = {c: i for i, c in enumerate(columns)}
    at = [(row_at[r], column_at[c]) for r, c in zip(tests["_row"], tests["_header"])]
    out = tests.iloc[sorted(range(len(tests)), key=at.__getitem__)]
    out = out.rename(columns={"_row": "row", "_header": "column"})
    out["verdict"] = out["_mark"].map(VERDICTS)
    return marks, out[SIGNIFICANCE_COLUMNS].reset_index(drop=True)


def _column_marks(
    runs: pd.DataFrame,
    per_sample: pd.DataFrame,
    index: str,
    metrics: dict[str, str],
    higher: list[bool],
    alpha: float,
    test_unit: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Significance marks of `metrics_table`'s grid (rows `index`, columns the headers) and
    the tests behind them (`SIGNIFICANCE_COLUMNS`): every row against its real-only
    baseline, per metric that has per-sample values; Holm's correction over all of them (one
    table, one family)."""
    runs = runs.assign(_row=runs[index].astype(str))
    found = []
    for metric, up in zip(metrics, higher):
        tests = compare_to_baseline(runs, per_sample, "_row", metric, test_unit=test_unit)
        tests = tests[tests["p_value"].notna()]
        found.append(tests.assign(_header=metrics[metric], _up=up, metric=metric, unit=test_unit))
    tests = pd.concat(found, ignore_index=True)
    tests["p_holm"] = holm(tests["p_value"].to_numpy(dtype=float))
    return _judged(tests, alpha, list(runs[index].cat.categories), list(metrics.values()))


def metrics_table(
    runs: pd.DataFrame,
    index: str,
    metrics: dict[str, str],
    caption: str,
    label: str,
    higher: dict[str, bool] | None = None,
    over: str = "seeds",
    per_sample: pd.DataFrame | None = None,
    alpha: float = ALPHA,
    unranked: Sequence[str] = (),
    rank_floor: dict[str, float] | None = None,
    tests: list[pd.DataFrame] | None = None,
    test_unit: str = "image",
) -> str:
    """Rows `index` (an ordered categorical), one column per metric (name -> header), each
    `mean ± std` over the runs of a row, with its own direction and decimals.

    `unranked`: the labels of leading reference rows (never bold, ruled off below);
    `rank_floor`: metric -> the value that lower entries rank as when the best is chosen.

    With `per_sample`, the entries of metrics that have per-sample values are marked as in
    `pivot_table_tex` (paired Wilcoxon by `test_unit` against the real-only baseline, Holm over
    the whole table); per-run quantities (convergence, the EF's correlation) have none and
    get no mark.
    `tests`, when given, receives the tests behind the marks as one frame of
    `SIGNIFICANCE_COLUMNS` (`column`: the metric's header)."""
    higher = higher or {}
    rows = [c for c in runs[index].cat.categories if c in set(runs[index])]
    parts = {f: [] for f in ("mean", "std", "n")}
    for m in metrics:
        s = summarise(runs, index, m).set_index(index).reindex(rows)
        for f in parts:
            parts[f].append(s[f].rename(metrics[m]))
    mean = pd.concat(parts["mean"], axis=1)
    ups = [higher.get(m, is_higher_better(m)) for m in metrics]
    marks, n_tests = pd.DataFrame("", index=mean.index, columns=mean.columns), 0
    if per_sample is not None and len(per_sample) and "mode" in runs.columns:
        marks, done = _column_marks(runs, per_sample, index, metrics, ups, alpha, test_unit)
        marks = marks.reindex(index=mean.index, columns=mean.columns).fillna("")
        n_tests = len(done)
        if tests is not None:
            tests.append(done)
    g = _Grid(
        mean=mean,
        std=pd.concat(parts["std"], axis=1),
        n=pd.concat(parts["n"], axis=1).fillna(0),
        higher=ups,
        decimals=[decimals_for(mean[c].to_numpy(dtype=float)) for c in mean.columns],
        marks=marks,
        unranked=tuple(unranked),
        rank_floor=[(rank_floor or {}).get(m) for m in metrics],
    )
    note = g.spread_note(over) + g.direction_note() + _tests_note(n_tests, alpha, test_unit)
    return g.to_latex(index, caption.rstrip() + note, label)
