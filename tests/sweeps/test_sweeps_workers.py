"""Several workers, one sweep: every cell logged exactly once, every generator trained once,
and a worker killed with SIGKILL in the middle of a cell costs a retry, not a result."""

from __future__ import annotations

import os
import signal
from urllib.parse import urlsplit

import optuna
import yaml
from mlflow.tracking import MlflowClient
from sweeps_support import (
    assert_exactly_once,
    finish,
    output,
    start_sweep,
    wait_for_cell_in_progress,
)

from sweeps.storage import with_driver


def _kill_mid_cell(out, *args):
    """Start a sweep, SIGKILL it while it computes its first cell; the killed cell key."""
    victim = start_sweep(out, *args)
    pid = wait_for_cell_in_progress(out, victim)
    os.kill(pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    return victim


def test_two_workers_on_postgres_finish_a_killed_sweep_exactly_once(tmp_path, pg_url):
    """Optuna and MLflow both on PostgreSQL, as for several machines: a worker dies
    mid-cell, then two workers started as separate commands complete the grid."""
    storage, tracking = pg_url(), pg_url()
    out = tmp_path / "smoke"
    args = ("--storage", storage, "--tracking-uri", tracking)
    victim = _kill_mid_cell(out, *args)

    workers = [start_sweep(out, *args) for _ in range(2)]
    summaries = [finish(w) for w in workers]
    assert all(s["failed"] == {} for s in summaries)
    assert_exactly_once(out, tracking, storage, victim.pid)

    # The rerun after the kill found the orphaned cell through its stopped heartbeat.
    study = optuna.load_study(study_name="smoke", storage=with_driver(storage))
    states = [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.FAIL in states  # the dead worker's trial, retried

    # No password in anything printed, written beside the results, or logged to MLflow.
    secret = urlsplit(storage).password
    if secret:  # CI's PostgreSQL has one
        for proc in (victim, *workers):
            assert secret not in output(proc)
        for path in out.rglob("*"):
            if path.is_file() and path.suffix in (".yaml", ".json", ".log", ".txt", ".csv"):
                assert secret not in path.read_text(errors="ignore"), path
        client = MlflowClient(with_driver(tracking))
        exp = client.get_experiment_by_name("smoke")
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            text = repr(run.data.params) + repr(run.data.tags)
            assert secret not in text
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert ":***@" in cfg["sweep"]["storage"] and ":***@" in cfg["tracking"]["uri"]


def test_local_workers_on_sqlite_finish_a_killed_sweep_exactly_once(tmp_path):
    """The default storage: a single worker dies mid-cell, then ``--workers 2`` finishes."""
    out = tmp_path / "smoke"
    victim = _kill_mid_cell(out)
    summary = finish(start_sweep(out, "--workers", "2"))
    assert summary["failed"] == {}
    assert summary["cells"] == 3
    db = f"sqlite:///{out}"
    assert_exactly_once(out, f"{db}/mlflow.db", f"{db}/optuna.db", victim.pid)
