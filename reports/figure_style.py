"""How every plot of the report looks and is labelled: the seaborn style, a figure on its own
canvas, one colour per generation mode, and the captions' phrases. Shared by the figure modules
(`score_figures`, `agreement_figures`, `fidelity_figures`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.axes import BASELINE_LABEL, axis_value, display_order, is_higher_better
from reports.figure_layout import FULL_WIDTH, PANEL_HEIGHT
from reports.latex import escape_latex
from reports.stats import BASELINE_MODE


@contextmanager
def plot_style() -> Iterator[None]:
    # Context managers, not sns.set_theme: a report must not change the caller's rcParams.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        yield


def new_figure(
    nrows: int, ncols: int, width: float | None = None, height: float | None = None, **kwargs
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on its own Agg canvas and its axes as an (nrows, ncols)
    array; panels 3 in wide up to the page width unless `width` is given."""
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


def with_mode_labels(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a `mode_label` column, the hue of every mode-coloured plot."""
    return df.assign(mode_label=df["mode"].map(mode_label))


def hue_order(df: pd.DataFrame) -> list[str]:
    """The mode labels of `df` in the display order of modes (legends agree across figures)."""
    return [mode_label(m) for m in display_order("mode", df["mode"])]


def primary_metric(df: pd.DataFrame) -> str | None:
    """The one primary metric of the runs in `df`; None when they name none or several."""
    names = pd.unique(df["primary_metric"].dropna())
    return str(names[0]) if len(names) == 1 else None


def caption_axes(**axes: object) -> str:
    """`task seg, model unet` for a caption (escaped)."""
    return ", ".join(
        f"{k.replace('_', ' ')} {escape_latex(axis_value(k, v))}" for k, v in axes.items()
    )


def direction_text(metric: str) -> str:
    """`higher is better` or `lower is better`, for a caption."""
    return "higher is better" if is_higher_better(metric) else "lower is better"
