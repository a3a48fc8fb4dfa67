"""reports.collect against a real temporary MLflow store (SQLite + local artifacts)."""

import mlflow
import pandas as pd
import pytest

from reports.collect import (
    ExperimentNotFoundError,
    collect_curves,
    collect_fidelity,
    collect_per_patient,
    collect_per_sample,
    collect_runs,
    export,
    patient_errors,
)
from tests.reports.conftest import sqlite_experiment

SWEEP = "quick"


def _cell_tags(mode, seed, ratio, status="ok"):
    return {
        "kind": "cell",
        "cell_key": f"seg-{mode}-{ratio}",
        "task": "seg",
        "mode": mode,
        "prompt": "-",
        "ratio": str(ratio),
        "protocol": "mix",
        "real_fraction": "1.0",
        "seed": str(seed),
        "model": "unet",
        "primary_metric": "dice_mean",
        "status": status,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sweep with a parent run, 4 finished cells, a crashed cell, a generator and a
    fidelity run; returns the tracking URI."""
    with sqlite_experiment(tmp_path_factory.mktemp("mlflow"), SWEEP) as (uri, exp):
        with mlflow.start_run(experiment_id=exp, run_name="sweep", tags={"kind": "sweep"}):
            for mode, ratio in [("none", 0.0), ("text", 0.5)]:
                for seed in (0, 1):
                    with mlflow.start_run(
                        experiment_id=exp, nested=True, tags=_cell_tags(mode, seed, ratio)
                    ):
                        dice = 0.8 + 0.05 * (mode == "text") + 0.01 * seed
                        mlflow.log_metrics(
                            {"test/dice_mean": dice, "test/hd95_mean": 5.0, "epochs_to_95": 7}
                            | {"optimiser_steps": 90 + seed}
                        )
                        for epoch, v in enumerate([0.2, 0.5, 0.7]):
                            mlflow.log_metric("val/dice_mean", v + seed, step=epoch)
                        csv = "sample,dice_mean,hd95_mean\n0007,0.9,4.0\n0012,0.7,6.0\n"
                        mlflow.log_text(csv, "per_sample.csv")
                        if mode == "text":  # a seg cell with pixel spacing: EF per patient
                            mlflow.log_text(
                                "patient,edv_ml_pred,edv_ml_ref,esv_ml_pred,esv_ml_ref,ef_pred,"
                                f"ef_ref\n0003,100,110,50,40,{50 + seed},63.6\n",
                                "per_patient.csv",
                            )
            with mlflow.start_run(
                experiment_id=exp, nested=True, tags=_cell_tags("semantic", 0, 1.0)
            ):
                mlflow.log_metric("test/dice_mean", 0.1)
                mlflow.end_run(status="FAILED")
        with mlflow.start_run(experiment_id=exp, tags={"kind": "generator", "mode": "text"}):
            mlflow.log_metric("train/loss", 0.3)
        with mlflow.start_run(
            experiment_id=exp, tags={"kind": "fidelity", "mode": "text", "prompt": "P3"}
        ):
            mlflow.log_metrics({"fd": 12.5, "kid": 0.01, "mask_dice": 0.8})
            mlflow.log_params({"recipe.extractor": "echo_encoder", "recipe.n": 64})
    return uri


def test_collect_runs_tidy_frame(store):
    runs = collect_runs(store, SWEEP)
    assert len(runs) == 4  # the failed cell, sweep, generator and fidelity runs are left out
    assert list(runs.columns[:13]) == [
        "run_id",
        "start_time",
        "cell_key",
        "task",
        "mode",
        "prompt",
        "ratio",
        "protocol",
        "real_fraction",
        "seed",
        "model",
        "primary_metric",
        "status",
    ]
    assert {"dice_mean", "hd95_mean", "epochs_to_95"} <= set(runs.columns)
    assert sorted(runs["optimiser_steps"]) == [90, 90, 91, 91]  # what training cost, kept
    assert not any(c.startswith(("test/", "val/")) for c in runs.columns)
    assert runs["ratio"].dtype == float and runs["real_fraction"].dtype == float
    assert sorted(runs["seed"].tolist()) == [0, 0, 1, 1]
    text = runs[(runs["mode"] == "text") & (runs["seed"] == 1)].iloc[0]
    assert text["dice_mean"] == pytest.approx(0.86)
    assert text["ratio"] == 0.5 and text["status"] == "ok"


def test_collect_per_sample_long_table(store):
    runs = collect_runs(store, SWEEP)
    long = collect_per_sample(store, runs)
    assert list(long.columns) == ["run_id", "cell_key", "seed", "sample", "metric", "value"]
    assert len(long) == 4 * 2 * 2  # runs x samples x metrics
    # Sample ids stay strings: "0007" must not become 7.
    assert set(long["sample"]) == {"0007", "0012"}
    one = long[(long["run_id"] == runs["run_id"].iloc[0]) & (long["metric"] == "hd95_mean")]
    assert dict(zip(one["sample"], one["value"])) == {"0007": 4.0, "0012": 6.0}


def test_collect_per_patient_keeps_the_runs_that_have_it(store):
    runs = collect_runs(store, SWEEP)
    table = collect_per_patient(store, runs)
    text = runs.loc[runs["mode"] == "text", "run_id"]
    assert sorted(table["run_id"]) == sorted(text) and list(table["patient"]) == ["0003"] * 2
    assert list(table.columns[:4]) == ["run_id", "cell_key", "seed", "patient"]
    assert sorted(table["ef_pred"]) == [50, 51] and set(table["ef_ref"]) == {63.6}
    assert collect_per_patient(store, runs[runs["mode"] == "none"]).empty
    # As paired-test rows: one per run, patient and index, the absolute error.
    errors = patient_errors(table)
    assert list(errors.columns) == ["run_id", "cell_key", "seed", "sample", "metric", "value"]
    ef = errors[errors["metric"] == "ef_mae"].sort_values("seed")
    assert ef["value"].tolist() == pytest.approx([13.6, 12.6]) and set(ef["sample"]) == {"0003"}
    assert errors.loc[errors["metric"] == "edv_mae_ml", "value"].tolist() == [10, 10]
    assert errors.loc[errors["metric"] == "esv_mae_ml", "value"].tolist() == [10, 10]
    assert patient_errors(table.iloc[:0]).empty


def test_collect_curves(store):
    runs = collect_runs(store, SWEEP)
    curves = collect_curves(store, runs.iloc[:1], "val/dice_mean")
    assert list(curves.columns) == ["run_id", "cell_key", "step", "value"]
    seed = runs["seed"].iloc[0]
    assert curves["step"].tolist() == [0, 1, 2]
    assert curves["value"].tolist() == pytest.approx([0.2 + seed, 0.5 + seed, 0.7 + seed])


def test_collect_fidelity_with_recipe(store):
    fid = collect_fidelity(store, SWEEP)
    assert len(fid) == 1
    row = fid.iloc[0]
    assert (row["mode"], row["prompt"], row["fd"]) == ("text", "P3", 12.5)
    assert row["recipe.extractor"] == "echo_encoder" and row["recipe.n"] == "64"


def test_missing_experiment_is_named(store):
    with pytest.raises(ExperimentNotFoundError, match="'nope'.*known experiments.*quick"):
        collect_runs(store, "nope")


def test_missing_sqlite_file_is_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path}/absent.db"
    with pytest.raises(FileNotFoundError, match="absent.db"):
        collect_runs(uri, SWEEP)
    assert not (tmp_path / "absent.db").exists()


def test_export_writes_csv_and_parquet(tmp_path):
    df = pd.DataFrame({"run_id": ["a", "b"], "dice_mean": [0.8, 0.9]})
    csv, parquet = export(df, tmp_path / "out", "runs")
    pd.testing.assert_frame_equal(pd.read_csv(csv), pd.read_parquet(parquet), check_dtype=False)


def test_collected_runs_make_tables(store, tmp_path):
    from reports.tables import write_tables

    runs = collect_runs(store, SWEEP)
    paths = write_tables(
        runs,
        collect_per_sample(store, runs),
        tmp_path,
        fidelity=collect_fidelity(store, SWEEP),
    )
    assert sorted(p.name for p in paths) == [
        "convergence-seg-unet-rf1.tex",
        "de-seg-unet-mix-rf1.tex",
        "fidelity.tex",
    ]
    de = (tmp_path / "de-seg-unet-mix-rf1.tex").read_text()
    # Alone in its column: nothing to be best against, so not bold; 2 samples: no test.
    assert r"text & -- & 0.855 $\pm$ 0.007 \\" in de
