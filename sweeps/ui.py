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

from benchmark.config import folder_config
from benchmark.database_urls import is_database_url, sqlite_file, with_driver
from benchmark.redact import mask_uri, unmasked
from benchmark.tracking import artifact_location_for, folder_tracking_uri, relocate_experiment


def mlflow_server_command(host: str, port: int) -> list[str]:
    """``mlflow server`` on ``host:port``; the store comes from ``MLFLOW_BACKEND_STORE_URI``."""
    # One worker: the UI of one sweep needs no more, and a 2-core machine has no more.
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
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


def default_optuna_storage(run_dir: Path, configured: str | None = None) -> str | None:
    """The sweep's ``sweep.storage`` as its config.yaml records it (``configured``), else the
    folder's ``optuna.db`` if there is one. A password config.yaml masked cannot open it."""
    if configured:
        advice = "pass --storage, or --no-dashboard"
        return unmasked(configured, Path(run_dir) / "config.yaml", "sweep.storage", advice)
    db = Path(run_dir).resolve() / "optuna.db"
    return f"sqlite:///{db}" if db.is_file() else None


def serve_mlflow(
    run_dir: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    dashboard_port: int | None = 8080,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> int:
    """Run the MLflow UI and optuna-dashboard (``dashboard_port`` None: MLflow only) of the
    sweep folder ``run_dir`` until interrupted; returns the exit code of the first server
    that stopped. ``tracking_uri`` and ``storage`` default to the stores the sweep's
    config.yaml names, else the folder's ``mlflow.db`` and ``optuna.db``."""
    cfg = folder_config(run_dir)
    uri = folder_tracking_uri(run_dir, cfg.tracking.uri if cfg else None, tracking_uri)
    if not is_database_url(uri):
        raise ValueError(
            f"tracking.uri {mask_uri(uri)} is a tracking server, not a store to serve: "
            "its UI is at that address"
        )
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        raise FileNotFoundError(f"{db}: no MLflow store here; run a sweep into {run_dir} first")
    if cfg is not None:  # a moved sweep folder: the UI shows the artifacts it holds
        experiment = cfg.tracking.experiment or cfg.name
        relocate_experiment(uri, experiment, artifact_location_for(uri, run_dir))
    if not port_is_free(host, port):
        raise RuntimeError(f"port {port} on {host} is in use; pass --port")
    dashboard = None
    if dashboard_port is not None:
        storage = storage or default_optuna_storage(run_dir, cfg.sweep.storage if cfg else None)
    if dashboard_port is not None and storage is not None:
        if not port_is_free(host, dashboard_port):
            raise RuntimeError(f"port {dashboard_port} on {host} is in use; pass --dashboard-port")
        dashboard = dashboard_command(storage, host, dashboard_port)
    # Each server in a session of its own, stopped as a group: the MLflow CLI runs its
    # web server as a child process that a signal to the CLI alone would leave behind.
    procs = [
        subprocess.Popen(
            mlflow_server_command(host, port),
            # The store's URL in the environment, not on the command line where every
            # user's `ps` would show its password.
            env=server_env() | {"MLFLOW_BACKEND_STORE_URI": with_driver(uri)},
            start_new_session=True,
        )
    ]
    print(
        f"MLflow UI for {run_dir} ({mask_uri(uri)}): http://{host}:{port}  (Ctrl-C to stop)",
        flush=True,
    )
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
