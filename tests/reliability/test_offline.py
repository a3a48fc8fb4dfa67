"""An unreachable MLflow server costs no result: the sweep keeps everything in its stage
folders (exit 3, no report), ``python -m benchmark sync`` back-fills MLflow once the server
is up, exactly once however often it runs; a server lost midway sends the tracker offline
instead of failing cells."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fault_support import Child, stage_problems, sweep_argv
from loopback import free_port
from mlflow.tracking import MlflowClient
from sweeps_support import SMOKE_KEYS

from benchmark.__main__ import EXIT_UNTRACKED
from benchmark.tracking import Tracker


@pytest.fixture
def mlflow_server(tmp_path):
    """``start()`` runs an MLflow tracking server on loopback (one worker, no job runner);
    it is stopped by its process group at the end."""
    procs = []
    port = free_port()
    uri = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ]
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - the server writes it
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        procs.append(proc)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    return proc
            except OSError:
                time.sleep(0.5)
        raise AssertionError("MLflow server did not start")

    def stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # The `mlflow server` process exits before the uvicorn it started, which can still
        # answer a kept-alive connection meanwhile (seen with MLflow 3.9): wait for the group.
        deadline = time.time() + 30
        while _group_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        if _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    yield uri, start, stop
    for proc in procs:
        stop(proc)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, which serve nothing, aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # exited meanwhile
        if int(group) == pgid and state != "Z":
            return True
    return False


def _cli(root, name, *argv) -> Child:
    return Child(list(argv), root / f"{name}.log")


def test_unreachable_server_then_sync_backfills_exactly_once(
    tmp_path, mlflow_server, reliability_record
):
    uri, start, stop = mlflow_server
    out = tmp_path / "smoke"
    sweep = Child(sweep_argv(out, "--tracking-uri", uri), tmp_path / "sweep.log")
    assert sweep.wait() == EXIT_UNTRACKED, sweep.output()[-3000:]
    summary = sweep.summary()
    assert summary["tracking_offline"] and summary["failed"] == {}
    assert summary["computed"] == len(SMOKE_KEYS) and summary["tables"] == []
    assert "python -m benchmark sync" in sweep.output()
    assert not stage_problems(out)
    assert len(list((out / "cells").glob("*/metrics.json"))) == len(SMOKE_KEYS)
    assert not (out / "report").exists()  # nothing built from an index that is not there

    server = start()
    synced = _cli(tmp_path, "sync", "sync", str(out), "--json", "--quiet")
    assert synced.wait() == 0, synced.output()[-3000:]
    logged = synced.summary()["logged"]
    assert logged == {"generator": 1, "fidelity": 1, "cell": len(SMOKE_KEYS)}

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'cell'")
    assert sorted(r.data.tags["cell_key"] for r in runs) == sorted(SMOKE_KEYS)
    (parent,) = client.search_runs([exp.experiment_id], "tags.kind = 'sweep'")
    for run in runs:
        stage = out / "cells" / run.data.tags["stage"]
        metrics = json.loads((stage / "metrics.json").read_text())
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.metrics["test/dice_mean"] == metrics["test"]["dice_mean"]
        assert len(client.get_metric_history(run.info.run_id, "val/dice_mean")) >= 1
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"per_sample.csv"}
    (fidelity,) = client.search_runs([exp.experiment_id], "tags.kind = 'fidelity'")
    assert "samples.png" in {a.path for a in client.list_artifacts(fidelity.info.run_id)}

    again = _cli(tmp_path, "sync-again", "sync", str(out), "--json", "--quiet")
    assert again.wait() == 0, again.output()[-3000:]
    assert again.summary()["logged"] == {
        "generator": 0,
        "fidelity": 0,
        "cell": 0,
    }
    assert len(client.search_runs([exp.experiment_id], "tags.kind = 'cell'")) == len(SMOKE_KEYS)

    report = _cli(tmp_path, "report", "report", str(out))
    assert report.wait() == 0, report.output()[-3000:]
    assert list((out / "report" / "tables").glob("*.tex"))

    # The server dies while a tracker is in use: the next call goes offline, not wrong.
    tracker = Tracker(uri, "smoke")
    assert not tracker.offline
    stop(server)
    started = time.time()
    assert tracker.start_run("late", {"kind": "cell"}) is None
    assert tracker.offline and time.time() - started < 60
    tracker.log_metrics(None, {"x": 1.0})  # every later call is a no-op
    assert tracker.finished_runs("cell", "cell_key") == {}
    reliability_record("offline", cells=len(SMOKE_KEYS), lost=0, duplicated=0)


def test_sync_refuses_an_unreachable_server(tmp_path, capsys):
    from benchmark.__main__ import main

    out = tmp_path / "smoke"
    out.mkdir()
    port = free_port()
    (out / "config.yaml").write_text(f"name: smoke\ntracking:\n  uri: http://127.0.0.1:{port}\n")
    assert main(["sync", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} is unreachable" in err and "nothing was synced" in err


@pytest.mark.parametrize("command", ["sync", "report", "ui"])
def test_commands_need_the_password_that_config_yaml_masks(command, tmp_path, capsys):
    from benchmark.__main__ import main

    out = tmp_path / "smoke"
    out.mkdir()
    (out / "config.yaml").write_text(
        "name: smoke\ntracking:\n  uri: postgresql://bench:***@127.0.0.1:1/mlflow\n"
    )
    assert main([command, str(out)]) == 2
    err = capsys.readouterr().err
    assert "tracking.uri postgresql://bench:***@127.0.0.1:1/mlflow" in err
    assert "pass --tracking-uri" in err and "Traceback" not in err


def test_ui_needs_the_storage_password_that_config_yaml_masks(tmp_path, capsys):
    from benchmark.__main__ import main

    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    (tmp_path / "config.yaml").write_text(
        "name: smoke\nsweep:\n  storage: postgresql://bench:***@127.0.0.1:1/optuna\n"
    )
    assert main(["ui", str(tmp_path)]) == 2
    assert "pass --storage, or --no-dashboard" in capsys.readouterr().err


def test_ui_leaves_a_tracking_server_to_its_own_ui(tmp_path, capsys):
    from benchmark.__main__ import main

    assert main(["ui", str(tmp_path), "--tracking-uri", "http://u:pw@127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "is a tracking server" in err and "pw" not in err
