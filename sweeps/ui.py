"""``python -m benchmark ui``: the MLflow UI and optuna-dashboard of a run folder.

Both bind to loopback by default, run as child processes and stop together: when either
exits, on Ctrl-C, or on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmark.database_urls import with_driver
from benchmark.redact import mask_uri


def mlflow_server_command(backend_uri: str, host: str, port: int) -> list[str]:
    # One worker: the UI of one sweep needs no more, and a 2-core machine has no more.
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def server_env() -> dict[str, str]:
    # Job execution starts extra background workers the UI does not need.
    return os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def dashboard_command(storage: str, host: str, port: int) -> list[str] | None:
    """The optuna-dashboard command for ``storage``, or None if it is not installed."""
    script = Path(sys.executable).with_name("optuna-dashboard")
    exe = str(script) if script.is_file() else shutil.which("optuna-dashboard")
    if exe is None:
        return None
    # optuna-dashboard reads a journal file from its path (it sniffs the format), and a
    # database through SQLAlchemy, which needs the installed PostgreSQL driver named.
    if storage.startswith("journal://"):
        target = storage.removeprefix("journal://")
    else:
        target = with_driver(storage)
    return [exe, target, "--host", host, "--port", str(port), "--quiet"]


def default_optuna_storage(run_dir: Path) -> str | None:
    db = Path(run_dir).resolve() / "optuna.db"
    return f"sqlite:///{db}" if db.is_file() else None


def serve_mlflow(
    run_dir: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    dashboard_port: int | None = 8080,
    storage: str | None = None,
) -> int:
    """Run the MLflow UI for ``run_dir/mlflow.db`` and optuna-dashboard for the sweep's
    study (``storage``, default ``run_dir/optuna.db``; ``dashboard_port`` None: MLflow only)
    until interrupted; returns the exit code of the first server that stopped."""
    db = Path(run_dir).resolve() / "mlflow.db"
    if not db.is_file():
        raise FileNotFoundError(f"{db}: no MLflow store here; run a sweep into {run_dir} first")
    if not port_is_free(host, port):
        raise RuntimeError(f"port {port} on {host} is in use; pass --port")
    storage = storage or default_optuna_storage(run_dir)
    dashboard = None
    if dashboard_port is not None and storage is not None:
        if not port_is_free(host, dashboard_port):
            raise RuntimeError(f"port {dashboard_port} on {host} is in use; pass --dashboard-port")
        dashboard = dashboard_command(storage, host, dashboard_port)
    # Each server in a session of its own, stopped as a group: the MLflow CLI runs its
    # web server as a child process that a signal to the CLI alone would leave behind.
    procs = [
        subprocess.Popen(
            mlflow_server_command(f"sqlite:///{db}", host, port),
            env=server_env(),
            start_new_session=True,
        )
    ]
    print(f"MLflow UI for {run_dir}: http://{host}:{port}  (Ctrl-C to stop)", flush=True)
    if dashboard is not None:
        procs.append(subprocess.Popen(dashboard, start_new_session=True))
        print(f"optuna-dashboard ({mask_uri(storage)}): http://{host}:{dashboard_port}", flush=True)
    elif dashboard_port is not None:
        why = "no Optuna storage found" if storage is None else "optuna-dashboard is not installed"
        print(f"optuna-dashboard not started: {why}", flush=True)
    # SIGTERM (a service manager, a test) must stop the children too, not orphan them.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            codes = [p.poll() for p in procs]
            stopped = [c for c in codes if c is not None]
            if stopped:
                return stopped[0]
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the server and whatever it started
    except ProcessLookupError:
        pass  # already gone
