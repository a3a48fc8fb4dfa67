"""`python -m benchmark ui` serves the MLflow UI on loopback, one worker, jobs off."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from loopback import free_port

from benchmark.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent


def _serve(run_dir: Path, path: str) -> tuple[str, str]:
    """Start `ui` on ``run_dir``, GET ``path`` from its MLflow server, stop it: (body, output)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", str(run_dir), "--port", str(port)],
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
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                    body = resp.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None, "MLflow UI did not answer"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    output = proc.stdout.read()
    assert f"http://127.0.0.1:{port}" in output
    return body, output


def test_ui_serves_the_run_folder_on_loopback(tmp_path):
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")  # a store with one experiment
    body, _ = _serve(tmp_path, "/ajax-api/2.0/mlflow/experiments/search?max_results=10")
    assert '"smoke"' in body


def test_ui_shows_the_artifacts_of_a_moved_sweep_folder(tmp_path):
    made, moved = tmp_path / "gpu" / "smoke", tmp_path / "laptop" / "smoke"
    tracker = Tracker(f"sqlite:///{made / 'mlflow.db'}", "smoke")
    run = tracker.start_run("c1", {"kind": "cell"})
    tracker.log_text(run, "x", "per_sample.csv")
    tracker.end_run(run)
    (made / "config.yaml").write_text("name: smoke\n")
    moved.parent.mkdir()
    shutil.move(made, moved)
    body, output = _serve(moved, f"/ajax-api/2.0/mlflow/artifacts/list?run_id={run}")
    assert "per_sample.csv" in body
    assert "re-pointed from" in output and not made.exists()


def test_ui_without_a_store_is_an_error(tmp_path, capsys):
    from benchmark.__main__ import main

    assert main(["ui", str(tmp_path)]) == 2
    assert "no MLflow store here" in capsys.readouterr().err
