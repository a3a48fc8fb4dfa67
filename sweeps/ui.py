"""``python -m benchmark ui``: the MLflow UI of a run folder, on loopback by default."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


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


def serve_mlflow(run_dir: Path, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI for ``run_dir/mlflow.db`` until interrupted; returns its exit code."""
    db = Path(run_dir).resolve() / "mlflow.db"
    if not db.is_file():
        raise FileNotFoundError(f"{db}: no MLflow store here; run a sweep into {run_dir} first")
    if not port_is_free(host, port):
        raise RuntimeError(f"port {port} on {host} is in use; pass --port")
    proc = subprocess.Popen(mlflow_server_command(f"sqlite:///{db}", host, port), env=server_env())
    print(f"MLflow UI for {run_dir}: http://{host}:{port}  (Ctrl-C to stop)", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        return 0
