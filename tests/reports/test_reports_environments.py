"""The software environments of a sweep's runs: collected from MLflow and described."""

import mlflow
import pandas as pd
import pytest

from reports.collect import collect_environments, collect_fidelity, collect_runs
from reports.environments import describe_environments, describe_threads
from tests.reports.conftest import sqlite_experiment

SWEEP = "envs"


def _env(env_id, torch_version, commit="0123456789abcdef", dirty="False", gpus=""):
    return {
        "env": env_id,
        "env.python": "3.11.7",
        "env.cpu": "AMD EPYC",
        "env.gpus": gpus,
        "env.cuda": "12.8" if gpus else "None",
        "env.commit": commit,
        "env.dirty": dirty,
        "env.torch": torch_version,
        "env.diffusers": "0.42.1",
        "env.transformers": "5.25.0",
        "env.monai": "1.6.1",
    }


def _cell(seed):
    return {
        "kind": "cell",
        "cell_key": "seg-none",
        "task": "seg",
        "mode": "none",
        "prompt": "-",
        "ratio": "0.0",
        "protocol": "mix",
        "real_fraction": "1.0",
        "seed": str(seed),
        "model": "unet",
        "primary_metric": "dice_mean",
        "status": "ok",
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Cells from two installs (two of one, one of the other), one cell logged before
    environments were recorded, a fidelity run of the first install, a failed cell of a
    third (failed runs are not results); returns the tracking URI."""
    with sqlite_experiment(tmp_path_factory.mktemp("mlflow"), SWEEP) as (uri, exp):
        a, b = _env("aaaaaaaaaaaa", "2.13.0+cpu"), _env("bbbbbbbbbbbb", "2.12.0+cpu")
        for seed, env in ((0, a), (1, a), (2, b), (3, {})):
            with mlflow.start_run(experiment_id=exp, tags=_cell(seed) | env):
                mlflow.log_metric("test/dice_mean", 0.8)
        with mlflow.start_run(
            experiment_id=exp, tags={"kind": "fidelity", "mode": "text", "prompt": "P3"} | a
        ):
            mlflow.log_metric("fd", 3.0)
        with mlflow.start_run(experiment_id=exp, tags=_cell(4) | _env("cccccccccccc", "2.4")):
            mlflow.end_run(status="FAILED")
    return uri


def test_environments_are_counted_per_kind(store):
    envs = collect_environments(store, SWEEP)
    assert envs[["env", "cells", "fidelity_sets"]].values.tolist() == [
        ["aaaaaaaaaaaa", 2, 1],
        ["bbbbbbbbbbbb", 1, 0],
        ["not recorded", 1, 0],
    ]
    assert envs.set_index("env").loc["bbbbbbbbbbbb", "torch"] == "2.12.0+cpu"
    # Each run's row names its environment, to filter or group scores by it.
    runs = collect_runs(store, SWEEP)
    assert sorted(runs["env"].fillna("-")) == ["-", "aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert collect_fidelity(store, SWEEP)["env"].tolist() == ["aaaaaaaaaaaa"]


def test_several_environments_are_named_with_what_differs(store):
    several, unrecorded = describe_environments(collect_environments(store, SWEEP))
    assert several.startswith("The runs come from 2 software environments")
    assert "aaaaaaaaaaaa: 2 cell and 1 fidelity runs" in several
    assert "which differ in torch." in several  # only torch: the other fields are equal
    assert unrecorded == "1 cell and 0 fidelity runs were logged before environments were recorded."


def test_one_environment_is_described():
    row = {"env": "aaaaaaaaaaaa", "cells": 3, "fidelity_sets": 1}
    cpu = _env("aaaaaaaaaaaa", "2.13.0+cpu", dirty="True")
    envs = pd.DataFrame([row | {k.removeprefix("env."): v for k, v in cpu.items() if k != "env"}])
    assert describe_environments(envs) == [
        "Computed in one software environment (environments.csv): echosynth-bench at commit"
        " 0123456789 with uncommitted changes, Python 3.11.7, torch 2.13.0+cpu, diffusers"
        " 0.42.1, transformers 5.25.0, MONAI 1.6.1, on AMD EPYC (no GPU)."
    ]
    gpu = _env("aaaaaaaaaaaa", "2.13.0", commit="None", gpus="NVIDIA H100 80GB HBM3")
    gpu["env.echosynth-bench"] = "0.1.0"
    envs = pd.DataFrame([row | {k.removeprefix("env."): v for k, v in gpu.items() if k != "env"}])
    (text,) = describe_environments(envs)
    assert text.startswith(
        "Computed in one software environment (environments.csv): echosynth-bench 0.1.0, Python"
    )
    assert text.endswith("on NVIDIA H100 80GB HBM3, CUDA 12.8.")
    # A machine of eight: counted, not listed eight times.
    envs["gpus"] = ", ".join(["NVIDIA H100 80GB HBM3"] * 8 + ["NVIDIA A100-SXM4-40GB"])
    (text,) = describe_environments(envs)
    assert text.endswith("on 8 x NVIDIA H100 80GB HBM3, NVIDIA A100-SXM4-40GB, CUDA 12.8.")


def test_different_thread_counts_are_named_with_their_runs():
    runs = pd.DataFrame({"threads": pd.array([1, 1, 2, None], dtype="Int64")})
    assert describe_threads(runs) == [
        "The cell runs were trained with different numbers of torch threads (2 with 1, 1 with"
        " 2; runs.csv's threads column): on a CPU a result moves in its last digits with them."
    ]
    assert describe_threads(runs.iloc[:2]) == []  # one count
    assert describe_threads(pd.DataFrame({"seed": [0]})) == []  # logged before threads were
