"""Issue 5's done-when: every task x protocol runs through `python -m benchmark run --json` on
the smoke preset and prints the issue's metrics. The oracle set trains no generator, so each
cell costs its downstream training only (all nine: about 30 s on 2 CPU cores)."""

import json

import pytest

from benchmark.__main__ import main

KEYS = {
    "seg": {"dice_lv", "dice_myo", "dice_la", "dice_mean", "hd95_mean"},
    "vlseg": {"dice_mean"},
    "cls": {"accuracy", "f1_macro", "auroc"},
}
CONVERGENCE = {"epochs_to_95", "val_auc"}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One folder: the data stage, the oracle set and the MLflow store are made once."""
    return tmp_path_factory.mktemp("run-matrix")


def _strict(name: str):
    raise AssertionError(f"{name} in the --json line: not JSON")


@pytest.mark.parametrize("task", ["seg", "vlseg", "cls"])
@pytest.mark.parametrize("protocol", ["mix", "pretrain", "synthetic_only"])
def test_every_task_and_protocol_runs_with_its_metrics(task, protocol, out, capsys):
    argv = ["run", "--config", "smoke", "--task", task, "--protocol", protocol]
    argv += ["--mode", "oracle", "--ratio", "1", "--seed", "0", "--out", str(out)]
    argv += ["--prompt", "P2"] if task == "vlseg" else []
    assert main([*argv, "--json", "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1], parse_constant=_strict)
    prompt = "P2" if task == "vlseg" else "P_"
    assert line["cell_key"] == f"{task}-oracle-{prompt}-r1-{protocol}-f1-s0"
    metrics = line["metrics"]
    assert KEYS[task] | CONVERGENCE <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in KEYS[task] - {"hd95_mean"})
    assert metrics["val_auc"] is not None and 0 <= metrics["val_auc"] <= 1
