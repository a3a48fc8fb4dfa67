"""The report's figures, drawn and saved (`write_figures`) from the tidy frames of
`reports.collect`.

Each figure module's `*_figures` function returns one `Plot` per figure the data supports and
nothing for the rest: a figure that would be empty or say nothing (no curves, a single ratio, one
prompt kind, no fidelity runs) is skipped, never drawn blank. Figures are
`matplotlib.figure.Figure` objects on an Agg canvas, never pyplot's global state, so a report
made inside a long sweep process opens no window and leaks no figure. The modules:
`score_figures` (curves, ratio lines, heatmaps), `agreement_figures` (EF Bland-Altman),
`fidelity_figures` (score against fidelity) and `sample_figures` (image grids), all drawn in
the look of `figure_style` on the page of `figure_layout`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.agreement_figures import agreement_figures
from reports.axes import usable_runs
from reports.fidelity_figures import fidelity_figures
from reports.figure_layout import FULL_WIDTH, ReportFigure
from reports.figure_style import mode_palette
from reports.sample_figures import sample_figures
from reports.score_figures import curve_figures, heatmap_figures, ratio_figures


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
