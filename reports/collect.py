"""Read a sweep's MLflow runs into tidy pandas tables.

Reports read MLflow only (never stage folders), so results logged by many machines into one
tracking store combine into one table. Nothing here imports torch.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from mlflow.entities import ViewType
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.tracking import MlflowClient

from benchmark.database_urls import sqlite_file, with_driver
from benchmark.redact import mask_uri
from benchmark.sqlite_store import ARTIFACTS
from benchmark.tracking import CELL_RUN_METRICS
from reports.environments import ENV_TAG, NOT_RECORDED
from reports.settings import SETTINGS_COLUMN, run_settings, settings_id

PER_SAMPLE_ARTIFACT = "per_sample.csv"
PER_PATIENT_ARTIFACT = "per_patient.csv"
# Its value columns, as `downstream.volumes.agreement` writes them.
PER_PATIENT_COLUMNS = (
    "edv_ml_pred",
    "edv_ml_ref",
    "esv_ml_pred",
    "esv_ml_ref",
    "ef_pred",
    "ef_ref",
)

# Tag columns of a cell run, in output order, with the dtype each is cast to.
CELL_TAGS: dict[str, type] = {
    "cell_key": str,
    "task": str,
    "mode": str,
    "prompt": str,
    "ratio": float,
    "protocol": str,
    "real_fraction": float,
    "seed": int,
    "model": str,
    "primary_metric": str,
    "status": str,
    # The cell's stage folder (cells/<stage>/ of the run folder), where the sweep wrote it.
    "stage": str,
    # The id of the software environment that computed it (see ENV_TAG).
    "env": str,
    # torch's intra-op threads it trained with: CPU results move with them.
    "threads": int,
}
# Run-level metrics that are kept without a `test/` prefix.
EXTRA_METRICS = CELL_RUN_METRICS
# A synthetic set, hence its fidelity, depends on the real fraction its generator saw.
FIDELITY_TAGS = ("mode", "prompt", "real_fraction")
RECIPE_PREFIX = "recipe."

_PAGE = 1000


class ExperimentNotFoundError(LookupError):
    """The named experiment (sweep) does not exist in the tracking store."""


def _client(tracking_uri: str) -> MlflowClient:
    # MLflow silently creates an empty database for a missing SQLite file; a typo in the path
    # would then surface as "experiment not found", which hides the real cause.
    db = sqlite_file(tracking_uri)
    if db is not None and not db.exists():
        raise FileNotFoundError(f"MLflow store {mask_uri(tracking_uri)}: no file {db}")
    return MlflowClient(tracking_uri=with_driver(tracking_uri))


def _experiment_id(client: MlflowClient, tracking_uri: str, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL))
        raise ExperimentNotFoundError(
            f"experiment {experiment!r} not found in {mask_uri(tracking_uri)}; "
            f"known experiments: {known}"
        )
    return exp.experiment_id


def _search(client: MlflowClient, experiment_id: str, kind: str) -> list:
    """All FINISHED runs of one kind; running, failed and killed runs carry no final metrics."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.kind = '{kind}' and attributes.status = 'FINISHED'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=_PAGE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def collect_failed(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Cells of `experiment` whose latest run FAILED and that have no FINISHED run: columns
    cell_key, error (the reason the sweep recorded), run_id, start_time; sorted by key."""
    client = _client(tracking_uri)
    exp_id = _experiment_id(client, tracking_uri, experiment)
    finished = {r.data.tags.get("cell_key") for r in _search(client, exp_id, "cell")}
    latest: dict[str, object] = {}
    token = None
    while True:
        page = client.search_runs(
            [exp_id],
            filter_string="tags.kind = 'cell' and attributes.status = 'FAILED'",
            max_results=_PAGE,
            page_token=token,
        )
        for run in page:
            key = run.data.tags.get("cell_key")
            if key not in finished and (
                key not in latest or run.info.start_time > latest[key].info.start_time
            ):
                latest[key] = run
        token = page.token
        if not token:
            break
    rows = [
        {
            "cell_key": key,
            "error": run.data.tags.get("error", ""),
            "run_id": run.info.run_id,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
        }
        for key, run in sorted(latest.items())
    ]
    return pd.DataFrame(rows, columns=["cell_key", "error", "run_id", "start_time"])


def _cast(value: str | None, to: type):
    if value is None:
        return None if to is str else float("nan")
    try:
        return to(value)
    except ValueError:
        return float("nan") if to is not str else value


def collect_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per finished cell run of `experiment`.

    Columns: run_id, start_time, the cell tags (cell_key, task, mode, prompt, ratio, protocol,
    real_fraction, seed, model, primary_metric, status, stage, env, threads), `settings` (the id of
    the settings it was computed under, `reports.settings`), then one column per
    `test/<name>` metric (named `<name>`) and epochs_to_95, seconds_to_95, val_auc,
    train_seconds, best_epoch and optimiser_steps when logged.
    `seed` and `threads` are nullable integers, so that a missing tag stays missing instead
    of becoming a float.
    """
    client = _client(tracking_uri)
    runs = _search(client, _experiment_id(client, tracking_uri, experiment), "cell")
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        row = {
            "run_id": run.info.run_id,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
        }
        row |= {name: _cast(tags.get(name), to) for name, to in CELL_TAGS.items()}
        row[SETTINGS_COLUMN] = settings_id(run_settings(run.data.params))
        row |= {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
        row |= {k: metrics[k] for k in EXTRA_METRICS if k in metrics}
        rows.append(row)
    fixed = ["run_id", "start_time", *CELL_TAGS, SETTINGS_COLUMN]
    df = pd.DataFrame(rows, columns=None if rows else fixed)
    metric_cols = sorted(c for c in df.columns if c not in fixed and c not in EXTRA_METRICS)
    extra_cols = [c for c in EXTRA_METRICS if c in df.columns]
    df = df[fixed + metric_cols + extra_cols]
    for column in ("seed", "threads"):  # nullable: a missing tag stays missing
        df[column] = pd.array(df[column], dtype="Int64")
    df["ratio"] = df["ratio"].astype(float)
    df["real_fraction"] = df["real_fraction"].astype(float)
    return df.sort_values(["cell_key", "seed", "start_time"], ignore_index=True)


@contextmanager
def _quiet_downloads():
    """Hide MLflow's per-download progress bar: one bar per run floods a report's output."""
    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    old = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _artifact_file(
    client: MlflowClient, tracking_uri: str, run_id: str, artifact: str, tmp: Path
) -> Path | None:
    """The run's artifact ``artifact`` as a local file, None if the run has none.

    MLflow keeps the absolute location a run's artifacts had when it was logged. A sweep
    folder copied elsewhere (from the GPU machine to a laptop, say) still holds them, in
    ``mlartifacts/`` beside its ``mlflow.db`` (the sweep's layout); they are read there.
    """
    if artifact in {a.path for a in client.list_artifacts(run_id)}:
        dst = tmp / run_id
        dst.mkdir(exist_ok=True)
        return Path(client.download_artifacts(run_id, artifact, str(dst)))
    db = sqlite_file(tracking_uri)
    moved = db.parent / ARTIFACTS / run_id / "artifacts" / artifact if db else None
    return moved if moved is not None and moved.is_file() else None


def _artifact_tables(
    tracking_uri: str, runs: pd.DataFrame, artifact: str
) -> tuple[list[pd.DataFrame], list[str]]:
    """Each run's CSV artifact `artifact` with its run_id, cell_key and seed, and the runs
    without it."""
    client = _client(tracking_uri)
    frames, missing = [], []
    with _quiet_downloads(), tempfile.TemporaryDirectory(prefix="artifacts_") as tmp:
        for row in runs[["run_id", "cell_key", "seed"]].itertuples(index=False):
            path = _artifact_file(client, tracking_uri, row.run_id, artifact, Path(tmp))
            if path is None:
                missing.append(row.run_id)
                continue
            table = pd.read_csv(path, dtype={"sample": str, "patient": str})
            frames.append(table.assign(run_id=row.run_id, cell_key=row.cell_key, seed=row.seed))
    return frames, missing


def _with_seed(out: pd.DataFrame) -> pd.DataFrame:
    out["seed"] = pd.array(out["seed"], dtype="Int64")
    return out


def collect_per_sample(tracking_uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table (run_id, cell_key, seed, sample, metric, value) from `per_sample.csv` artifacts.

    Runs without the artifact (e.g. a cell whose test step crashed but which still finished) are
    skipped with one warning naming them, so one bad run does not block a whole report.
    """
    frames, missing = _artifact_tables(tracking_uri, runs, PER_SAMPLE_ARTIFACT)
    if missing:
        warnings.warn(
            f"{len(missing)} run(s) have no {PER_SAMPLE_ARTIFACT}: {missing}", stacklevel=2
        )
    cols = ["run_id", "cell_key", "seed", "sample", "metric", "value"]
    if not frames:
        return pd.DataFrame(columns=cols)
    ids = ["run_id", "cell_key", "seed", "sample"]
    long = [f.melt(id_vars=ids, var_name="metric", value_name="value") for f in frames]
    out = pd.concat(long, ignore_index=True)[cols]
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return _with_seed(out)


def collect_per_patient(tracking_uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, test patient) from `per_patient.csv` artifacts: run_id, cell_key,
    seed, patient and the predicted and reference indices (edv_ml_*, esv_ml_*, ef_*).

    Only segmentation runs whose test images had a pixel spacing have the artifact; the
    others are left out without a warning.
    """
    frames, _ = _artifact_tables(tracking_uri, runs, PER_PATIENT_ARTIFACT)
    cols = ["run_id", "cell_key", "seed", "patient", *PER_PATIENT_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=cols)
    return _with_seed(pd.concat(frames, ignore_index=True)[cols])


def patient_errors(per_patient: pd.DataFrame) -> pd.DataFrame:
    """The absolute errors of `collect_per_patient`'s rows in `collect_per_sample`'s long
    layout, the patient as the sample: metrics `ef_mae`, `edv_mae_ml` and `esv_mae_ml`, named
    as the run-level means they average to, so that the paired tests of the tables cover
    them patient by patient."""
    cols = ["run_id", "cell_key", "seed", "sample", "metric", "value"]
    if per_patient.empty:
        return pd.DataFrame(columns=cols)
    parts = []
    for metric, index in (("ef_mae", "ef"), ("edv_mae_ml", "edv_ml"), ("esv_mae_ml", "esv_ml")):
        error = (per_patient[f"{index}_pred"] - per_patient[f"{index}_ref"]).abs()
        parts.append(
            per_patient[["run_id", "cell_key", "seed"]].assign(
                sample=per_patient["patient"], metric=metric, value=error
            )
        )
    return _with_seed(pd.concat(parts, ignore_index=True)[cols])


def collect_curves(tracking_uri: str, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Metric history (run_id, cell_key, step, value) of `metric`, its full logged name
    (e.g. `val/dice_mean`, `train/loss`), for every run in `runs`.

    If a step was logged twice (a resumed run), the later value wins.
    """
    client = _client(tracking_uri)
    rows = []
    for row in runs[["run_id", "cell_key"]].itertuples(index=False):
        for m in client.get_metric_history(row.run_id, metric):
            rows.append((row.run_id, row.cell_key, m.step, m.value, m.timestamp))
    df = pd.DataFrame(rows, columns=["run_id", "cell_key", "step", "value", "timestamp"])
    df = df.sort_values(["run_id", "step", "timestamp"])
    df = df.drop_duplicates(["run_id", "step"], keep="last")
    return df.drop(columns="timestamp").reset_index(drop=True)


def collect_fidelity(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per finished fidelity run: run_id, mode, prompt, real_fraction, every logged
    metric (fd, kid, precision, recall, cond_*_acc, mask_dice, ...) and every `recipe.*` param,
    since an FD value is only comparable to another with the same recipe."""
    client = _client(tracking_uri)
    runs = _search(client, _experiment_id(client, tracking_uri, experiment), "fidelity")
    rows = []
    for run in runs:
        row = {"run_id": run.info.run_id}
        row |= {t: run.data.tags.get(t) for t in (*FIDELITY_TAGS, ENV_TAG)}
        row |= dict(run.data.metrics)
        row |= {k: v for k, v in run.data.params.items() if k.startswith(RECIPE_PREFIX)}
        rows.append(row)
    fixed = ["run_id", *FIDELITY_TAGS, ENV_TAG]
    df = pd.DataFrame(rows, columns=None if rows else fixed)
    recipe = sorted(c for c in df.columns if c.startswith(RECIPE_PREFIX))
    metrics = sorted(c for c in df.columns if c not in fixed and c not in recipe)
    # real_fraction is NaN where a run does not carry it (logged before the tag existed).
    df = df.assign(real_fraction=pd.to_numeric(df["real_fraction"], errors="coerce"))
    return df[fixed + metrics + recipe]


def collect_environments(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per software environment that computed the finished cell and fidelity runs
    of `experiment` (their `env` tag; :mod:`benchmark.environment`): `env` (its id, or
    "not recorded" for runs logged before environments were), `cells` and `fidelity_sets`
    (how many runs of each), then its fields as tagged (python, os, cpu, gpus, cuda, cudnn,
    commit, dirty, and each package's version); sorted by cells, most first."""
    client = _client(tracking_uri)
    exp_id = _experiment_id(client, tracking_uri, experiment)
    envs: dict[str, dict] = {}
    prefix = f"{ENV_TAG}."
    for kind, count in (("cell", "cells"), ("fidelity", "fidelity_sets")):
        for run in _search(client, exp_id, kind):
            tags = run.data.tags
            env = tags.get(ENV_TAG) or NOT_RECORDED
            row = envs.setdefault(env, {ENV_TAG: env, "cells": 0, "fidelity_sets": 0})
            row[count] += 1
            row |= {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}
    columns = [ENV_TAG, "cells", "fidelity_sets"]
    df = pd.DataFrame(list(envs.values()), columns=None if envs else columns)
    df = df[columns + [c for c in df.columns if c not in columns]]
    order = ["cells", "fidelity_sets", ENV_TAG]
    return df.sort_values(order, ascending=[False, False, True], ignore_index=True)


def collect_settings(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per finished cell run of `experiment`: run_id, `settings` (the id of its
    settings, "not recorded" for runs logged before they were), then one column per setting
    it logged (`settings.*` params, named without the prefix; empty where a run lacks it).
    Their values are the params' text."""
    client = _client(tracking_uri)
    rows = []
    for run in _search(client, _experiment_id(client, tracking_uri, experiment), "cell"):
        values = run_settings(run.data.params)
        rows.append({"run_id": run.info.run_id, SETTINGS_COLUMN: settings_id(values)} | values)
    fixed = ["run_id", SETTINGS_COLUMN]
    df = pd.DataFrame(rows, columns=None if rows else fixed)
    return df[fixed + sorted(c for c in df.columns if c not in fixed)]


def sweep_folder(tracking_uri: str, experiment: str) -> Path | None:
    """The run folder the sweep recorded (its parent run's `out` param) when it exists on this
    machine, else None: a report built on another machine than the sweep's has no folder."""
    client = _client(tracking_uri)
    for run in _search_any(client, _experiment_id(client, tracking_uri, experiment), "sweep"):
        out = run.data.params.get("out")
        if out and Path(out).is_dir():
            return Path(out)
    return None


def _search_any(client: MlflowClient, experiment_id: str, kind: str) -> list:
    """Runs of one kind in any state: a sweep's parent run is RUNNING while its report is made."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.kind = '{kind}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=_PAGE,
    )


def export(df: pd.DataFrame, out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write `df` as `<stem>.csv` and `<stem>.parquet` in `out_dir`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / f"{stem}.csv", out / f"{stem}.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    return csv, parquet
