"""A sweep's report folder: tidy exports, LaTeX tables and a terminal summary.

Reads MLflow only (any tracking URI), so runs logged from many machines combine here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.collect import collect_fidelity, collect_per_sample, collect_runs, export
from reports.tables import write_tables

_SUMMARY_AXES = ["task", "mode", "prompt", "ratio", "protocol", "real_fraction"]


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


def write_report(tracking_uri: str, experiment: str, out: Path) -> dict:
    """Collect the experiment's runs, export them, write the tables; return what was made."""
    out = Path(out)
    runs = collect_runs(tracking_uri, experiment)
    per_sample = collect_per_sample(tracking_uri, runs)
    fidelity = collect_fidelity(tracking_uri, experiment)
    exports = [*export(runs, out, "runs"), *export(per_sample, out, "per_sample")]
    tables = write_tables(runs, per_sample, out / "tables", fidelity=fidelity)
    return {"tables": tables, "exports": exports, "summary": summary_text(runs)}
