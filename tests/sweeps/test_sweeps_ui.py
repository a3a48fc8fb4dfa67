"""``python -m benchmark ui`` serves optuna-dashboard beside the MLflow UI, both on loopback,
and stopping the command stops both."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
from loopback import free_port

from benchmark.database_urls import with_driver
from benchmark.tracking import Tracker
from sweeps.ui import dashboard_command, default_optuna_storage

REPO = Path(__file__).resolve().parents[2]


def get(url: str, deadline: float, proc: subprocess.Popen) -> str:
    while time.time() < deadline:
        assert proc.poll() is None, "the ui command exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer")


def test_ui_serves_mlflow_and_optuna_dashboard_and_stops_both(tmp_path):
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    optuna.create_study(study_name="smoke", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    mlflow_port, dash_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", str(tmp_path), "--port", str(mlflow_port)]
        + ["--dashboard-port", str(dash_port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 180
        studies = json.loads(get(f"http://127.0.0.1:{dash_port}/api/studies", deadline, proc))
        assert [s["study_name"] for s in studies["study_summaries"]] == ["smoke"]
        url = f"http://127.0.0.1:{mlflow_port}/ajax-api/2.0/mlflow/experiments/search"
        assert '"smoke"' in get(f"{url}?max_results=10", deadline, proc)
    finally:
        proc.send_signal(signal.SIGTERM)  # the command alone: it must stop its servers
        proc.wait(timeout=60)
    out = proc.stdout.read()
    assert f"http://127.0.0.1:{mlflow_port}" in out and f"http://127.0.0.1:{dash_port}" in out
    deadline = time.time() + 30
    while time.time() < deadline and (listening(mlflow_port) or listening(dash_port)):
        time.sleep(0.5)
    assert not listening(mlflow_port), "the MLflow UI outlived the command"
    assert not listening(dash_port), "optuna-dashboard outlived the command"


def listening(port: int) -> bool:
    # Connect rather than bind: a closed server's port can linger in TIME_WAIT.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_dashboard_reads_a_journal_file_by_its_path_and_a_database_with_its_driver():
    cmd = dashboard_command("journal:///shared/run/optuna.log", "127.0.0.1", 8080)
    assert cmd is not None and cmd[1:4] == ["/shared/run/optuna.log", "--host", "127.0.0.1"]
    cmd = dashboard_command("postgresql://u@db/optuna", "127.0.0.1", 8080)
    assert cmd is not None and cmd[1] == with_driver("postgresql://u@db/optuna")


def _command_lines(but: int) -> list[str]:
    """The command line of every process but ``but``."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        if cmdline.parent.name != str(but):
            with contextlib.suppress(OSError):
                lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="ignore"))
    return lines


def test_ui_serves_a_postgres_store_without_its_password_on_a_command_line(tmp_path, pg_url):
    """A sweep across machines logs to PostgreSQL (README): `ui --tracking-uri` serves it,
    and the password reaches the server through its environment, not `ps`."""
    url = pg_url()
    Tracker(url, "smoke", (tmp_path / "mlartifacts").as_uri())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", str(tmp_path), "--port", str(port)]
        + ["--no-dashboard", "--tracking-uri", url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    secret = urlsplit(url).password
    try:
        search = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
        assert '"smoke"' in get(search, time.time() + 180, proc)
        if secret:  # CI's PostgreSQL has one
            # The ui command has it in its own (the test passes it there); its servers not.
            assert not [line for line in _command_lines(but=proc.pid) if secret in line]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    out = proc.stdout.read()
    assert f"http://127.0.0.1:{port}" in out
    assert not secret or secret not in out


def test_dashboard_opens_the_storage_the_sweep_named(tmp_path):
    journal = "journal:///shared/run/optuna.log"
    assert default_optuna_storage(tmp_path, journal) == journal  # no optuna.db to find there
    assert default_optuna_storage(tmp_path, None) is None
    optuna.create_study(study_name="smoke", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert default_optuna_storage(tmp_path, None) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    with pytest.raises(ValueError, match=r"sweep.storage postgresql://u:\*\*\*@db/o"):
        default_optuna_storage(tmp_path, "postgresql://u:***@db/o")
