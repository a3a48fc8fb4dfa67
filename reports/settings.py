"""What a report says of the settings its cell runs were computed under, and which of its
tables mix several.

Each cell run logs what decided its result apart from its own axes as ``settings.*`` params
(``Workspace.cell_settings``: the data, the task's network and training, the generator's
training and sampling). A folder swept again under other settings recomputes the cells the
new grid holds and supersedes their runs, but the cells it leaves out keep the runs of the
old settings. One table can then hold entries of two recipes, and a seed added under another
learning rate pools into the same mean as the others. Settings are compared key by key: a
real-only run has no generator settings, and a text cell has a guidance scale that a
semantic cell lacks, without either being a different recipe. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping

import pandas as pd

from benchmark.tracking import SETTINGS_PARAM
from reports.latex import escape_latex

# The runs table's column: the id of a run's settings (a hash of its `settings.*` params).
SETTINGS_COLUMN = "settings"
NOT_RECORDED = "not recorded"  # a run logged before settings were recorded
_PREFIX = f"{SETTINGS_PARAM}."
# Settings named, with their values, in a table's caption; the rest are counted.
_SHOWN = 3


def run_settings(params: Mapping[str, str]) -> dict[str, str]:
    """A run's settings, named as in the config (``downstream.seg.channels``), from its params."""
    return {k.removeprefix(_PREFIX): v for k, v in params.items() if k.startswith(_PREFIX)}


def settings_id(settings: Mapping[str, str]) -> str:
    """A short id of one run's settings, equal for equal settings; `NOT_RECORDED` for none."""
    if not settings:
        return NOT_RECORDED
    text = json.dumps(sorted(settings.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def settings_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct settings: `settings` (the id), `runs` (how many cell runs), then
    each setting's value (empty where those runs lack it); most runs first.
    ``per_run``: `reports.collect.collect_settings`'s frame (run_id, settings, one column per
    setting)."""
    values = [c for c in per_run.columns if c not in ("run_id", SETTINGS_COLUMN)]
    columns = [SETTINGS_COLUMN, "runs", *values]
    if per_run.empty:
        return pd.DataFrame(columns=columns)
    runs = per_run.groupby(SETTINGS_COLUMN).size().rename("runs")
    first = per_run.drop_duplicates(SETTINGS_COLUMN).set_index(SETTINGS_COLUMN)[values]
    out = first.join(runs).reset_index()[columns]
    return out.sort_values(["runs", SETTINGS_COLUMN], ascending=[False, True], ignore_index=True)


def differing(per_run: pd.DataFrame) -> dict[str, Counter]:
    """The settings that take more than one value among the runs that record them, each with
    how many runs hold each value; in column order."""
    out = {}
    for column in per_run.columns:
        if column in ("run_id", SETTINGS_COLUMN):
            continue
        counts = Counter(per_run[column].dropna())
        if len(counts) > 1:
            out[column] = counts
    return out


def mixed_note(runs: pd.DataFrame, per_run: pd.DataFrame) -> str:
    """A caption sentence (LaTeX) for a table of ``runs`` (their `run_id`s) whose runs were
    computed under different settings, or record none beside runs that do; "" otherwise.
    ``per_run``: as for `settings_table`."""
    own = per_run[per_run["run_id"].isin(runs["run_id"])]
    recorded = own[own[SETTINGS_COLUMN] != NOT_RECORDED]
    unknown = len(own) - len(recorded)
    if recorded.empty:
        return ""  # the report's opening says so, once
    varies = differing(recorded)
    if varies:
        named = [
            f"{escape_latex(key)}: "
            + ", ".join(f"{escape_latex(value)} in {_runs(n)}" for value, n in counts.most_common())
            for key, counts in list(varies.items())[:_SHOWN]
        ]
        more = len(varies) - _SHOWN
        named += [f"and {more} more (settings.csv)"] if more > 0 else []
        text = f" Mixed settings: its runs differ in {'; '.join(named)}."
        text += " Compare its entries with care."
        if unknown:
            text += f" It also holds {_runs(unknown)} without settings."
        return text
    if unknown:
        return (
            f" {unknown} of its {len(own)} runs {'was' if unknown == 1 else 'were'} logged"
            " before settings were recorded:"
            " whether they share the others' settings is unknown."
        )
    return ""


def describe_settings(per_run: pd.DataFrame) -> list[str]:
    """Sentences for a report (plain text): whether the cell runs share one set of settings,
    which settings differ if not, and how many runs record none."""
    recorded = per_run[per_run[SETTINGS_COLUMN] != NOT_RECORDED]
    out = []
    varies = differing(recorded)
    if varies:
        out.append(
            f"The cell runs differ in {', '.join(varies)} (settings.csv): a table whose runs"
            " differ says so in its caption."
        )
    elif len(recorded):
        out.append(
            f"The {len(recorded)} cell runs that record their settings (settings.csv) share"
            " them, apart from what their axes vary."
        )
    unknown = len(per_run) - len(recorded)
    if unknown:
        were = "run was" if unknown == 1 else "runs were"
        out.append(f"{unknown} cell {were} logged before settings were recorded.")
    return out


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"
