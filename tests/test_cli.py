import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.__main__ import main
from benchmark.tracking import default_tracking_uri

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", ["sweep", "run", "generate", "data", "report", "ui", "bench"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_dry_run_lists_canonical_cells(capsys):
    code = main(
        [
            "sweep",
            "--config",
            "smoke",
            "--dry-run",
            "--json",
            "--set",
            "grid.ratios=[0,0.5,1]",
            "--set",
            "grid.prompts=[P0,P3]",
        ]
    )
    assert code == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    keys = [c["key"] for c in cells]
    # ratio 0 and the baseline collapse; seg ignores the prompt: baseline + 2 ratios
    assert keys == [
        "seg-none-P_-r0-mix-f1-s0",
        "seg-unconditional-P_-r0.5-mix-f1-s0",
        "seg-unconditional-P_-r1-mix-f1-s0",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sweep", "--config", "smoke", "--dry-run", "--set", "grid.ratio=[1]"],
            "unknown key(s) grid.ratio",
        ),
        (["sweep", "--config", "nope.yaml", "--dry-run"], "nope.yaml: cannot read config"),
        (
            ["sweep", "--config", "smoke", "--dry-run", "--set", "grid.modes=[texty]"],
            "'texty' is not one of",
        ),
        (
            ["sweep", "--config", "smoke", "--dry-run", "--set", "grid.tasks=[detect]"],
            "grid.tasks[0]: 'detect' is not one of",
        ),
        (
            [
                "sweep",
                "--config",
                "smoke",
                "--dry-run",
                "--set",
                "grid.modes=[oracle]",
                "--set",
                "data.source=camus",
                "--set",
                "data.root=/nonexistent",
            ],
            "needs data.source 'phantom'",
        ),
        (["run", "--config", "smoke", "--task", "segg"], "invalid cell"),
        (
            ["sweep", "--config", "paper", "--dry-run", "--set", "data.root=/nonexistent/CAMUS"],
            "/nonexistent/CAMUS: data root does not exist",
        ),
        (["report", "/nonexistent/run"], "not a sweep folder"),
    ],
)
def test_errors_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("command", [["sweep"], ["run", "--task", "seg"]])
def test_sweep_and_run_refuse_a_multi_process_launch(command, monkeypatch, tmp_path, capsys):
    """Under torchrun every process would run the whole command (and wait on each other's
    stage locks): they stop at once instead; `generate` is the command that trains on
    several processes."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*command, "--config", "smoke", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not run under torchrun / accelerate launch (WORLD_SIZE=2)" in err
    assert "accelerate launch -m benchmark generate" in err
    assert not (tmp_path / "out").exists()


def test_diverged_training_exits_2_without_traceback(monkeypatch, capsys):
    import benchmark.__main__ as cli

    def diverge(args):
        raise FloatingPointError("mix: loss became nan in epoch 1")

    monkeypatch.setattr(cli, "cmd_run", diverge)
    assert main(["run", "--config", "smoke", "--task", "seg"]) == 2
    assert capsys.readouterr().err == "error: mix: loss became nan in epoch 1\n"


def test_error_messages_mask_passwords(capsys):
    code = main(
        [
            "sweep",
            "--config",
            "smoke",
            "--dry-run",
            "--set",
            "grid.modes=[texty]",
            "--storage",
            "postgresql://u:hunter2@db/x",
        ]
    )
    assert code == 2
    assert "hunter2" not in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [Path(sys.executable).parent / "echosynth", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "sweep" in out.stdout


def _strict(constant):
    raise ValueError(f"{constant} is not JSON")


def test_run_json_is_strict_json_with_mm_distances_and_ef(tmp_path, capsys):
    args = ["run", "--config", "smoke", "--task", "seg", "--out", str(tmp_path), "--json"]
    assert main([*args, "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1], parse_constant=_strict)
    metrics = out["metrics"]
    assert metrics["hd95_mm_mean"] > 0 and metrics["ef_mae"] >= 0
    # Two test patients give no EF correlation nor limits of agreement: null, not NaN.
    assert metrics["ef_corr"] is None and metrics["ef_loa"] is None
    # The cell folder keeps the indices per patient, and MLflow has them as an artifact.
    patients = pd.read_csv(Path(out["stage"]) / "per_patient.csv")
    assert len(patients) == 2 and {"ef_pred", "ef_ref", "edv_ml_pred"} <= set(patients.columns)
    mae = (patients["ef_pred"] - patients["ef_ref"]).abs().mean()
    assert metrics["ef_mae"] == pytest.approx(mae)
    client = MlflowClient(default_tracking_uri(tmp_path))
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.kind = 'cell'"
    )
    assert "per_patient.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # Every optimiser step is counted: one pass of batches of 8 per epoch run (smoke.yaml).
    summary = json.loads((Path(out["stage"]) / "metrics.json").read_text())
    passes = summary["epochs_run"] * -(-summary["n_real_train"] // 8)
    assert summary["optimiser_steps"] == passes
    assert run.data.metrics["optimiser_steps"] == passes
