"""Several workers, one sweep: every cell logged exactly once, every generator trained once,
and a worker killed with SIGKILL in the middle of a cell costs a retry, not a result."""

from __future__ import annotations

import os
import signal
import time
from urllib.parse import urlsplit

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sweeps_support import (
    assert_exactly_once,
    cell_pids,
    finish,
    output,
    start_sweep,
    wait_for_cell_in_progress,
)

from benchmark.database_urls import with_driver


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


@pytest.mark.slow  # 70 s; the PostgreSQL twin above runs by default where a server is given
def test_local_workers_on_sqlite_finish_a_killed_sweep_exactly_once(tmp_path):
    """The default storage: a single worker dies mid-cell, then ``--workers 2`` finishes."""
    out = tmp_path / "smoke"
    victim = _kill_mid_cell(out)
    summary = finish(start_sweep(out, "--workers", "2"))
    assert summary["failed"] == {}
    assert summary["cells"] == 3
    db = f"sqlite:///{out}"
    assert_exactly_once(out, f"{db}/mlflow.db", f"{db}/optuna.db", victim.pid)


def _children(pid: int) -> set[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return {int(p) for p in f.read().split()}


def _gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` has ended (or become a zombie) within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False


def _helpers_started(proc, timeout: float = 120) -> set[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, output(proc)[-2000:]
        kids = _children(proc.pid)
        # the resource tracker and the helper worker
        if len(kids) >= 2:
            return kids
        time.sleep(0.2)
    raise AssertionError("no helper process started")


def _cells_in_progress(out, n: int, proc, timeout: float = 120) -> set[int]:
    """Wait until ``n`` processes compute a cell (temporary cell folders); their pids."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, output(proc)[-2000:]
        pids = cell_pids(out)
        if len(pids) >= n:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{n} cells did not run at once within {timeout} s")


@pytest.mark.slow  # 80 s
def test_sigterm_stops_the_sweep_and_its_helpers_and_fails_their_cells(tmp_path):
    out = tmp_path / "smoke"
    # Cells long enough that the sweep and its helper each hold one when the signal comes.
    long = ["--set", "downstream.train.epochs=300", "--set", "downstream.train.patience=300"]
    victim = start_sweep(out, "--workers", "2", *long)
    kids = _helpers_started(victim)
    assert victim.pid in _cells_in_progress(out, 2, victim)
    os.kill(victim.pid, signal.SIGTERM)
    victim.wait(timeout=60)
    assert victim.returncode == 130, output(victim)[-2000:]
    assert "interrupted" in output(victim)
    assert all(_gone(pid, 30) for pid in kids), "a helper outlived its sweep"
    # Both interrupted cells failed at once, none is left RUNNING until its grace period:
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{out}/optuna.db")
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(optuna.trial.TrialState.FAIL) == 2
    assert optuna.trial.TrialState.RUNNING not in states
    # so a rerun runs them now.
    summary = finish(start_sweep(out, "--set", "sweep.grace_period=3600"))
    assert summary["failed"] == {} and summary["cells"] == 3


@pytest.mark.slow  # 35 s; python -m pytest -m slow
def test_a_helper_whose_sweep_was_killed_stops_instead_of_draining_the_queue(tmp_path):
    out = tmp_path / "smoke"
    # A grace period no test waits for: a helper that went on would wait for the killed
    # cell to go stale and never end.
    victim = start_sweep(out, "--workers", "2", "--set", "sweep.grace_period=3600")
    kids = _helpers_started(victim)
    wait_for_cell_in_progress(out, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    # It finishes the cell it holds (a smoke cell: seconds), then stops.
    assert all(_gone(pid, 120) for pid in kids), "an orphaned helper kept working"
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{out}/optuna.db")
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(optuna.trial.TrialState.RUNNING) == 1  # the killed sweep's cell
