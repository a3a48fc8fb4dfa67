"""A sweep's report folder: tidy exports, LaTeX tables, figures, report.tex/pdf and a terminal
summary.

Reads MLflow only (any tracking URI), so runs logged from many machines combine here; the one
exception is the sample grids, read from the sweep's run folder when it is on this machine.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.axes import cell_ids, usable_runs
from reports.collect import (
    collect_curves,
    collect_environments,
    collect_failed,
    collect_fidelity,
    collect_per_patient,
    collect_per_sample,
    collect_runs,
    collect_settings,
    export,
    patient_errors,
    sweep_folder,
)
from reports.document import compile_pdf, write_tex
from reports.environments import describe_environments, describe_threads
from reports.figures import write_figures
from reports.settings import describe_settings, settings_table
from reports.stats import check_test_unit
from reports.table_layout import SIGNIFICANCE_COLUMNS
from reports.tables import write_tables

_SUMMARY_AXES = ["task", "mode", "prompt", "ratio", "protocol", "real_fraction"]
FAILED_CSV = "failed.csv"


def summary_text(runs: pd.DataFrame) -> str:
    """Mean ± std over seeds of each cell's primary test metric, as a plain-text table."""
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    if ok.empty:
        return "no finished cells"
    rows = []
    for keys, group in ok.groupby(_SUMMARY_AXES, dropna=False, sort=True):
        metric = group["primary_metric"].iloc[0]
        values = group[metric].astype(float)
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        rows.append((*keys, metric, f"{values.mean():.4f} ± {std:.4f}", len(values)))
    table = pd.DataFrame(rows, columns=[*_SUMMARY_AXES, "metric", "test mean ± std", "seeds"])
    return table.to_string(index=False)


def validation_curves(tracking_uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    """`val/<primary_metric>` per epoch of every usable run (each run's own primary metric)."""
    runs = usable_runs(runs)
    frames = [
        collect_curves(tracking_uri, group, f"val/{metric}")
        for metric, group in runs.groupby("primary_metric", sort=True)
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["run_id", "cell_key", "step", "value"])
    return pd.concat(frames, ignore_index=True)


def _facts(experiment: str, runs: pd.DataFrame) -> list[str]:
    """The opening sentences of report.tex: what the report covers."""
    ok = usable_runs(runs)
    if ok.empty:
        return [f"Sweep {experiment}: no finished cell runs."]
    fractions = ", ".join(f"{f:g}" for f in sorted(ok["real_fraction"].dropna().unique()))
    return [
        f"Sweep {experiment}: {cell_ids(ok).nunique()} cells, {len(ok)} finished runs over"
        f" {ok['seed'].nunique()} seed(s); tasks {', '.join(sorted(ok['task'].unique()))};"
        f" generation modes {', '.join(sorted(ok['mode'].unique()))}; real fractions"
        f" {fractions}.",
        "All scores are on the real test patients, which no model or generator saw in training.",
    ]


def _tested(significance: pd.DataFrame) -> list[str]:
    """The sentence of report.tex that points to the p-values behind the tables' marks."""
    if significance.empty:
        return []
    n, tables = len(significance), significance["table"].nunique()
    return [
        f"The {n} paired tests behind the marks of {tables} table{'s' if tables > 1 else ''},"
        " with their p-values before and after Holm's correction, are in significance.csv."
    ]


def _clear_stale(out: Path) -> None:
    """Remove the tables and figures an earlier report left in `out`: the folder mirrors the
    tracking store now, and a file for a slice that no longer exists would read as current."""
    for pattern in ("tables/*.tex", "figures/*.pdf", "figures/*.png", FAILED_CSV):
        for path in out.glob(pattern):
            path.unlink()


def write_report(
    tracking_uri: str,
    experiment: str,
    out: Path,
    *,
    run_dir: Path | None = None,
    pdf: bool = True,
    test_unit: str = "image",
) -> dict:
    """Collect the experiment's runs and write the report folder; return what was made.

    `out` receives runs/per_sample/environments/settings/significance (and, for seg with pixel
    spacing, per_patient) CSV + Parquet, `tables/*.tex`, `figures/*`, report.tex and, when TeX
    is installed and `pdf` is true, report.pdf (a LaTeX error raises
    `reports.document.LatexError`). `run_dir` is the sweep's folder, for the sample grids; by
    default the folder the sweep recorded in MLflow, when it exists here. `test_unit`: what
    the tables' paired tests pair, each test image or each test patient
    (`reports.stats.TEST_UNITS`).
    Returns `tables`, `exports`, `figures` (paths), `tex`, `pdf` (None when not compiled),
    `summary` (the terminal table, the software environments and settings, then the failed
    cells) and `failed` (cells without a result: key, reason; also `failed.csv` and a section
    of report.tex).
    """
    check_test_unit(test_unit)  # before anything is written
    out = Path(out)
    runs = collect_runs(tracking_uri, experiment)
    _clear_stale(out)
    per_sample = collect_per_sample(tracking_uri, runs)
    per_patient = collect_per_patient(tracking_uri, runs)
    fidelity = collect_fidelity(tracking_uri, experiment)
    failed = collect_failed(tracking_uri, experiment)
    environments = collect_environments(tracking_uri, experiment)
    exports = [*export(runs, out, "runs"), *export(per_sample, out, "per_sample")]
    exports += export(environments, out, "environments")
    provenance = describe_environments(environments) + describe_threads(usable_runs(runs))
    # Of the runs the tables and figures show: what they were computed under.
    settings = collect_settings(tracking_uri, experiment)
    settings = settings[settings["run_id"].isin(usable_runs(runs)["run_id"])]
    exports += export(settings_table(settings), out, "settings")
    provenance += describe_settings(settings)
    if len(per_patient):
        exports += export(per_patient, out, "per_patient")
    if len(failed):
        out.mkdir(parents=True, exist_ok=True)
        failed.to_csv(out / FAILED_CSV, index=False)
        exports.append(out / FAILED_CSV)
    # The tables' paired tests also cover the clinical indices, patient by patient.
    errors = patient_errors(per_patient)
    paired = pd.concat([per_sample, errors], ignore_index=True) if len(errors) else per_sample
    curves = validation_curves(tracking_uri, runs)
    tests: list[pd.DataFrame] = []
    tables = write_tables(
        runs,
        paired,
        out / "tables",
        fidelity=fidelity,
        curves=curves,
        tests=tests,
        test_unit=test_unit,
        settings=settings,
    )
    columns = ["table", *SIGNIFICANCE_COLUMNS]
    significance = pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(columns=columns)
    exports += export(significance, out, "significance")
    if run_dir is None:
        run_dir = sweep_folder(tracking_uri, experiment)
    figures = write_figures(
        runs,
        curves,
        out / "figures",
        fidelity=fidelity,
        per_patient=per_patient,
        run_dir=run_dir,
    )
    title = f"echosynth-bench report: {experiment}"
    tex = write_tex(
        tables,
        figures,
        out,
        title=title,
        facts=_facts(experiment, runs) + _tested(significance) + provenance,
        failed=list(zip(failed["cell_key"], failed["error"])),
    )
    summary = summary_text(runs)
    if provenance:
        summary += "\n\n" + "\n".join(provenance)
    if len(failed):
        summary += f"\n\n{len(failed)} failed cell(s), without a result:\n" + "\n".join(
            f"  {key}: {error}" for key, error in zip(failed["cell_key"], failed["error"])
        )
    return {
        "tables": tables,
        "exports": exports,
        "figures": [f.path for f in figures],
        "tex": tex,
        "pdf": compile_pdf(tex) if pdf else None,
        "summary": summary,
        "failed": failed,
    }
