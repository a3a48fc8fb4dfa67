"""Helpers of the distributed-sweep tests: the smoke preset shrunk further so that several
sweeps fit in a test run, started as the user starts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The smoke grid (a real-only baseline and two ratios sharing one unconditional generator),
# trained for as little as still exercises every stage. Fast heartbeats: a dead worker's
# cell comes back after 4 s.
SHRINK = [
    "data.phantom_patients=8",
    "generator.train_steps=5",
    "generator.sample_steps=2",
    "downstream.train.epochs=1",
    "sweep.heartbeat_interval=1",
    "sweep.grace_period=4",
]
SMOKE_KEYS = [
    "seg-none-P_-r0-mix-f1-s0",
    "seg-unconditional-P_-r0.5-mix-f1-s0",
    "seg-unconditional-P_-r1-mix-f1-s0",
]


def sweep_command(out: Path, *args: str) -> list[str]:
    sets = [x for s in SHRINK for x in ("--set", s)]
    return [
        sys.executable,
        "-m",
        "benchmark",
        "sweep",
        "--config",
        "smoke",
        "--out",
        str(out),
        "--json",
        "--quiet",
        *sets,
        *args,
    ]


def start_sweep(out: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    log = log or out.parent / f"{out.name}-{uuid.uuid4().hex[:6]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            sweep_command(out, *args),
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
    proc.log = log
    return proc


def cell_pids(out: Path) -> set[int]:
    """The processes computing a cell now: the pids in its temporary folders' names."""
    return {
        int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
        for tmp in (out / "cells").glob(".*.tmp-*")
    }


def wait_for_cell_in_progress(out: Path, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Wait until ``proc`` is computing a cell (its temporary folder exists); its pid."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it reached a cell"
        if proc.pid in cell_pids(out):
            return proc.pid
        time.sleep(0.1)
    raise AssertionError(f"no cell started within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    """Wait for a sweep process; its JSON summary (the last line it printed)."""
    proc.wait(timeout=timeout)
    text = output(proc)
    assert proc.returncode == 0, text[-4000:]
    return json.loads(text.strip().splitlines()[-1])


def output(proc: subprocess.Popen) -> str:
    """What a process started by ``start_sweep`` printed (stdout and stderr)."""
    return Path(proc.log).read_text()


def assert_exactly_once(out: Path, tracking_uri: str, storage_url: str, killed: int) -> None:
    """Every canonical cell has exactly one FINISHED MLflow run and one COMPLETE trial, and
    the one generator was trained and logged once. ``killed``: the pid of the worker that
    was killed mid-cell, whose temporary folder is all that may be left behind."""
    import optuna
    from mlflow.tracking import MlflowClient

    from benchmark.database_urls import with_driver

    client = MlflowClient(with_driver(tracking_uri))
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'cell'", max_results=1000)
    finished = Counter(r.data.tags["cell_key"] for r in runs if r.info.status == "FINISHED")
    assert finished == Counter(SMOKE_KEYS), finished

    gen_stages = [p.name for p in (out / "gen").iterdir() if p.is_dir()]
    assert len(gen_stages) == 1, gen_stages
    gens = client.search_runs([exp.experiment_id], "tags.kind = 'generator'")
    assert Counter(r.data.tags["stage"] for r in gens if r.info.status == "FINISHED") == Counter(
        gen_stages
    )
    left = [p.name for p in out.glob("*/.*.tmp-*") if f".tmp-{killed}-" not in p.name]
    assert not left, f"temporary stage folders left behind: {left}"

    study = optuna.load_study(study_name="smoke", storage=with_driver(storage_url))
    complete = Counter(
        t.user_attrs["cell_key"]
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    )
    assert complete == Counter(SMOKE_KEYS), complete
    assert all("cell_key" in t.user_attrs for t in study.get_trials()), (
        "a trial without a cell was created"
    )
