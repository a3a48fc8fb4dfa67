"""``sweep --tune``: a TPE study with a median pruner on the real-only reference cell, whose
winners are frozen into the resolved config that the grid's cells then train with."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sweeps_support import finish, start_sweep

from sweeps.tuning import TUNED

# Five trials, pruning allowed from the third; a learning-rate range wide enough that some
# trials are clearly worse than the median after their first epoch.
TUNE = [
    "--tune",
    "--set",
    "grid.modes=[none]",
    "--set",
    "sweep.tune_trials=5",
    "--set",
    "sweep.tune_startup_trials=2",
    "--set",
    "sweep.tune_lr=[1.0e-5,1.0e-1]",
    "--set",
    "sweep.tune_epochs=[1,2]",
    "--set",
    "sweep.tune_batch_sizes=[4,8]",
]


def test_tuning_study_prunes_completes_and_freezes_winners(tmp_path):
    out = tmp_path / "smoke"
    summary = finish(start_sweep(out, *TUNE))
    assert summary["failed"] == {} and summary["cells"] == 1

    study = optuna.load_study(study_name="smoke-tune-seg", storage=f"sqlite:///{out}/optuna.db")
    states = Counter(t.state for t in study.get_trials())
    assert states[optuna.trial.TrialState.COMPLETE] >= 1
    assert states[optuna.trial.TrialState.PRUNED] >= 1
    assert sum(states.values()) == 5
    best = study.best_trial.params

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert {k: resolved["downstream"]["train"][k] for k in TUNED} == pytest.approx(best)
    cell = next(p for p in (out / "cells").iterdir() if p.is_dir())
    used = yaml.safe_load((cell / "config.yaml").read_text())["downstream"]["train"]
    assert {k: used[k] for k in TUNED} == pytest.approx(best)
    assert yaml.safe_load((out / "config.yaml").read_text())["sweep"]["tune"] is True

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'tuning'")
    parent = client.search_runs([exp.experiment_id], "tags.kind = 'sweep'")[0].info.run_id
    assert len(runs) == 5 and all(r.data.tags["mlflow.parentRunId"] == parent for r in runs)
    assert (
        Counter(r.data.tags["state"] for r in runs)["pruned"]
        == states[optuna.trial.TrialState.PRUNED]
    )
    (cell_run,) = client.search_runs([exp.experiment_id], "tags.kind = 'cell'")
    assert float(cell_run.data.params["downstream.train.lr"]) == best["lr"]
