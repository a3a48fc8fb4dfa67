"""The reports layer reads MLflow and pandas only: importing it must not pull in torch."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reports_does_not_import_torch():
    code = (
        "import reports.tables, reports.axes, reports.latex, reports.collect, reports.stats, sys; "
        "assert 'torch' not in sys.modules, 'reports imported torch'"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
