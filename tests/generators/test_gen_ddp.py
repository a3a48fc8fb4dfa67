"""``python -m benchmark generate`` under torchrun: two CPU processes (gloo) train one
generator data parallel, and its stages are written once, by the main process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmark.tracking import default_tracking_uri

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--config", "smoke", "--mode", "unconditional", "--json", "--quiet"]
ARGS += ["--set", "generator.train_steps=4"]


def _generate(
    out: Path, launcher: list[str], *args: str, timeout: float
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *launcher, "-m", "benchmark", "generate", *ARGS, *args]
    cmd += ["--out", str(out)]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:  # the deadlock this test guards against
        raise AssertionError(f"{' '.join(cmd)} hung for {timeout} s") from exc
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _stages(out: Path, kind: str) -> list[Path]:
    return [p for p in (out / kind).iterdir() if p.is_dir()]  # temporary folders included


@pytest.mark.slow  # 35 s on 2 CPU cores: 22 s for the two processes, 12 s for one
def test_two_processes_train_one_generator_data_parallel(tmp_path):
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _generate(tmp_path / "two", torchrun, timeout=240)
    lines = two.stdout.strip().splitlines()
    assert len(lines) == 1, two.stdout  # printed by the main process only
    info = json.loads(lines[0])
    assert info["mode"] == "unconditional" and "fidelity" in info  # measured after the others left
    gens, synths = _stages(tmp_path / "two", "gen"), _stages(tmp_path / "two", "synth")
    assert [str(p) for p in gens] == [info["pipeline"]]
    assert [str(p) for p in synths] == [info["synthetic"]]
    client = MlflowClient(default_tracking_uri(tmp_path / "two"))
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.kind = 'generator'")
    assert len(runs) == 1

    # The same generator trained by one process: ranks that drew rank 0's batches and
    # noise (one seed for all) would give exactly its loss curve; two ranks that draw their
    # own give the mean of two different ones.
    one = _generate(tmp_path / "one", [], "--set", "fidelity.enabled=false", timeout=240)
    pipeline = Path(json.loads(one.stdout.strip().splitlines()[-1])["pipeline"])
    assert pipeline.name == gens[0].name  # the same stage key: the same settings
    alone = json.loads((pipeline / "losses.json").read_text())
    together = json.loads((gens[0] / "losses.json").read_text())
    assert len(alone) == len(together) == 4
    assert all(a != b for a, b in zip(alone, together))
