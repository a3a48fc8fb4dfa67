"""`python -m benchmark ui` serves the MLflow UI on loopback, one worker, jobs off."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmark.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_run_folder_on_loopback(tmp_path):
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")  # a store with one experiment
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", str(tmp_path), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so the server and its worker are stopped together
    )
    try:
        deadline = time.time() + 120
        body = None
        while time.time() < deadline and proc.poll() is None:
            try:
                url = (
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
                )
                with urllib.request.urlopen(url, timeout=2) as resp:
                    body = resp.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None, "MLflow UI did not answer"
        assert '"smoke"' in body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    assert f"http://127.0.0.1:{port}" in proc.stdout.read()


def test_ui_without_a_store_is_an_error(tmp_path, capsys):
    from benchmark.__main__ import main

    assert main(["ui", str(tmp_path)]) == 2
    assert "no MLflow store here" in capsys.readouterr().err
