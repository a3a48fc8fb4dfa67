"""`run` against a PostgreSQL MLflow store (skipped without ECHOSYNTH_TEST_PG).

The sweep tests reach PostgreSQL through the sweep's workspace; these reach it through the
single-cell command, whose workspace builds its own MLflow tracker.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from benchmark.__main__ import main
from benchmark.database_urls import with_driver


def test_run_logs_a_cell_to_postgres_with_its_artifacts_in_the_output_folder(
    tmp_path, pg_url, monkeypatch, capsys
):
    from mlflow.tracking import MlflowClient

    url = pg_url()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # MLflow's default artifact root would be ./mlruns here
    out = tmp_path / "out"
    argv = ["run", "--config", "smoke", "--task", "seg", "--out", str(out), "--json", "--quiet"]
    assert main([*argv, "--tracking-uri", url]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    client = MlflowClient(with_driver(url))
    exp = client.get_experiment_by_name("smoke")
    assert exp.artifact_location == (out / "mlartifacts").as_uri()
    [run] = client.search_runs([exp.experiment_id], "tags.kind = 'cell'")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/dice_mean"] == result["metrics"]["dice_mean"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_sample.csv", "config.yaml"} <= logged
    assert not (cwd / "mlruns").exists()
    assert urlsplit(url).password not in Path(result["stage"], "config.yaml").read_text()


def test_a_moved_output_folder_is_repointed_on_postgres(tmp_path, pg_url):
    """The store stays on its server, the output folder with the artifacts moves."""
    from benchmark.tracking import Tracker

    url = pg_url()
    made, moved = tmp_path / "a", tmp_path / "b"
    tracker = Tracker(url, "smoke", (made / "mlartifacts").as_uri())
    run = tracker.start_run("c1", {"kind": "cell"})
    tracker.log_text(run, "x", "per_sample.csv")
    tracker.end_run(run)
    made.rename(moved)

    tracker = Tracker(url, "smoke", (moved / "mlartifacts").as_uri())
    assert [a.path for a in tracker.client.list_artifacts(run)] == ["per_sample.csv"]
    assert tracker.client.get_run(run).info.artifact_uri.startswith(moved.as_uri())
