"""The fidelity stage: computed once per synthetic set, logged with its recipe."""

import json

import mlflow

from benchmark.grid import Mode
from sweeps.fidelity import fidelity_stage
from sweeps.workspace import Workspace


def test_fidelity_stage_logs_once_with_recipe(tmp_path, smoke_config):
    ws = Workspace(smoke_config, tmp_path, progress=False)
    first = fidelity_stage(ws, Mode.ORACLE, None, 1.0)
    second = fidelity_stage(ws, Mode.ORACLE, None, 1.0)
    assert first.computed and not second.computed
    result = json.loads((first.path / "fidelity.json").read_text())
    assert result["reference_split"] == "test" and result["extractor"] == "echo-encoder"
    assert 0 <= result["precision"] <= 1 and 0 <= result["cond_view_phase_acc"] <= 1
    assert result["fd_echo"] >= 0 and result["fd_floor"] >= 0

    client = mlflow.tracking.MlflowClient(ws.tracking_uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'fidelity'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["mode"] == "oracle"
    assert run.data.params["recipe.reference_split"] == "test"
    assert run.data.params["recipe.weights_sha256"] == result["weights_hash"]
    assert {"fd", "kid", "precision", "recall", "cond_view_phase_acc"} <= set(run.data.metrics)
    # the corrupted control reuses the same encoder stage: one encoder per dataset
    fidelity_stage(ws, Mode.CORRUPTED, None, 1.0)
    encoders = [p for p in (tmp_path / "fidelity").iterdir() if p.name.startswith("encoder-")]
    assert len([p for p in encoders if p.is_dir()]) == 1
