"""``python -m benchmark project``: unit costs from a sweep folder, checked by hand."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmark.__main__ import main
from benchmark.config import dump_config, load_config
from sweeps.projection import ProjectionError, measure_rates, project, training_patients
from tests.conftest import CONFIGS

GRID = [
    "grid.tasks=[seg]",
    "grid.modes=[none,unconditional]",
    "grid.ratios=[1]",
    "grid.protocols=[mix]",
    "grid.real_fractions=[1.0]",
    "grid.seeds=[0]",
    "generator.train_steps=100",
    "generator.batch_size=8",
    "generator.sample_steps=10",
    "downstream.train.epochs=10",
]
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def stage(run: Path, kind: str, name: str, start: float, seconds: float, **files) -> None:
    folder = run / kind / name
    folder.mkdir(parents=True)
    finished = datetime.fromtimestamp(T0 + start + seconds, UTC)
    done = {"finished": finished.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": seconds}
    done["summary"] = files.pop("summary", {})
    (folder / "done.json").write_text(json.dumps(done))
    for filename, content in files.items():
        (folder / filename.replace("_", ".")).write_text(json.dumps(content))


@pytest.fixture
def run(tmp_path):
    """A finished sweep of 10 training patients (40 images), timed as below (seconds)."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(CONFIGS / "smoke.yaml", GRID)
    (run / "config.yaml").write_text(dump_config(cfg))
    stage(run, "data", "phantom-a", 0, 1, summary={"splits": {"train": 40}})
    gen = {"batch_size": 8, "train_steps": 100, "hybrid_variant": "concat"}
    # 100 steps x 8 images in 80 s: 0.1 s per training image.
    stage(
        run,
        "gen",
        "unconditional-a",
        1,
        80,
        summary={"n_train": 40},
        spec_json={"spec": {"mode": "unconditional", "generator": gen}},
    )
    # 40 images x 10 steps in 20 s: 0.05 s per image and step.
    stage(
        run,
        "synth",
        "unconditional-b",
        81,
        20,
        summary={"n_images": 40},
        spec_json={"spec": {"mode": "unconditional", "sampling": {"sample_steps": 10}}},
    )
    stage(run, "fidelity", "encoder-c", 101, 8)  # a judge: 8 s / 40 train images
    stage(run, "fidelity", "unconditional-d", 109, 4, fidelity_json={"n_synthetic": 40})
    # Cells run side by side. Real only: 40 images x 5 epochs in 10 s. Pretrain: 40 x 5
    # (synthetic) + 40 x 10 (real) in 30 s. Both 0.05 s per image-epoch; epochs run are
    # 5, 5 and 10 of 10: a share of 2/3.
    stage(
        run,
        "cells",
        "seg-none-P_-r0-mix-f1-s0-e",
        113,
        10,
        metrics_json={
            "cell_key": "seg-none-P_-r0-mix-f1-s0",
            "n_real_train": 40,
            "n_synthetic": 0,
            "epochs_run": 5,
        },
    )
    stage(
        run,
        "cells",
        "seg-unconditional-P_-r1-pretrain-f1-s0-f",
        113,
        30,
        metrics_json={
            "cell_key": "seg-unconditional-P_-r1-pretrain-f1-s0",
            "n_real_train": 40,
            "n_synthetic": 40,
            "epochs_run": 10,
        },
        curves_json={"pretrain/val/dice_mean": [0.1] * 5, "val/dice_mean": [0.2] * 10},
    )
    return run


def test_unit_costs_by_hand(run):
    rates = measure_rates(run)
    assert rates.generator_per_image == {"unconditional": pytest.approx(0.1)}
    assert rates.sampling_per_image_step == {"unconditional": pytest.approx(0.05)}
    assert rates.fidelity_per_image == {"unconditional": pytest.approx(0.1)}
    assert rates.judges_per_train_image == pytest.approx(0.2)
    assert rates.cell_per_image_epoch == {"seg": pytest.approx(0.05)}
    assert rates.epochs_share == {"seg": pytest.approx(2 / 3)}
    # Busy 1 + 80 + 20 + 8 + 4 + 10 + 30 = 153 s over a wall of 143 s (the cells overlap).
    assert rates.busy_seconds == pytest.approx(153)
    assert rates.wall_seconds == pytest.approx(143)


def test_a_control_set_is_measured_with_the_sweeps_steps(run):
    # The oracle's key names no sampler (it runs none): 40 images x the sweep's 10 steps.
    spec = {"spec": {"mode": "oracle"}}
    stage(run, "synth", "oracle-x", 81, 4, summary={"n_images": 40}, spec_json=spec)
    assert measure_rates(run).sampling_per_image_step["oracle"] == pytest.approx(0.01)


def test_projection_by_hand(run):
    # Target: the same models, seg real-only and unconditional mix at ratio 1.
    cfg = load_config(CONFIGS / "smoke.yaml", GRID)
    result = project(measure_rates(run), cfg, patients=10)
    stages = result["stages"]
    assert stages["generators"]["unconditional"]["seconds"] == pytest.approx(80)  # 800 x 0.1
    assert stages["sampling"]["unconditional"]["seconds"] == pytest.approx(20)  # 40 x 10 x 0.05
    assert stages["fidelity"]["unconditional"]["seconds"] == pytest.approx(4)
    assert stages["fidelity"]["judges"]["seconds"] == pytest.approx(8)  # 40 x 0.2
    # Cells: (40 + 80) images x 10 epochs x 2/3 x 0.05 = 40 s; all epochs: 60 s.
    assert stages["cells"]["seg"]["seconds"] == pytest.approx(40)
    assert result["busy_seconds"] == pytest.approx(152)
    assert result["wall_seconds"] == pytest.approx(152 * 143 / 153)
    assert result["wall_seconds_all_epochs"] == pytest.approx(172 * 143 / 153)
    assert (result["cells"], result["generators"], result["synthetic_sets"]) == (2, 1, 1)


def test_a_mode_the_source_never_ran_is_named(run):
    cfg = load_config(CONFIGS / "smoke.yaml", [*GRID, "grid.modes=[none,semantic]"])
    with pytest.raises(ProjectionError, match="measured no generator semantic"):
        project(measure_rates(run), cfg, patients=10)


def test_training_patients_follow_the_data_source():
    smoke = load_config(CONFIGS / "smoke.yaml")
    assert training_patients(smoke, 7) == 7
    camus = load_config(CONFIGS / "paper.yaml", ["data.root=/x"])
    assert training_patients(camus) == 400  # SB: 500 patients, 50 validation, 50 test
    folder = load_config(CONFIGS / "smoke.yaml", ["data.source=folder", "data.root=/x"])
    with pytest.raises(ProjectionError, match="--train-patients"):
        training_patients(folder)


def test_cli_prints_the_projection_and_refuses_a_non_sweep_folder(run, tmp_path, capsys):
    assert (
        main(
            [
                "project",
                "--from",
                str(run),
                "--config",
                "smoke",
                *sum((["--set", s] for s in GRID), []),
                "--train-patients",
                "10",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["busy_seconds"] == pytest.approx(152)
    assert main(["project", "--from", str(tmp_path), "--config", "smoke"]) == 2
    assert "not a sweep folder (no config.yaml)" in capsys.readouterr().err


def test_a_step_budget_projects_the_same_work_at_every_ratio(run):
    # 3 steps of 8 images per epoch whatever the set: (24 + 24) images x 10 epochs x 2/3 x
    # 0.05 s = 16 s, where one pass per epoch gave (40 + 80) x ... = 40 s.
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        [*GRID, "downstream.train.steps_per_epoch=3", "downstream.train.batch_size=8"],
    )
    stages = project(measure_rates(run), cfg, patients=10)["stages"]
    assert stages["cells"]["seg"]["seconds"] == pytest.approx(16)
    ratio_2 = load_config(
        CONFIGS / "smoke.yaml",
        [*GRID, "downstream.train.steps_per_epoch=3", "downstream.train.batch_size=8"]
        + ["grid.ratios=[2]"],
    )
    assert project(measure_rates(run), ratio_2, patients=10)["stages"]["cells"]["seg"][
        "seconds"
    ] == pytest.approx(16)


def test_each_task_projects_with_its_own_epochs(run):
    # Twice seg's epochs doubles its cells (80 s); another task's epochs change nothing.
    seg = load_config(CONFIGS / "smoke.yaml", [*GRID, "downstream.seg.train.epochs=20"])
    cls = load_config(CONFIGS / "smoke.yaml", [*GRID, "downstream.cls.train.epochs=20"])
    assert project(measure_rates(run), seg, 10)["stages"]["cells"]["seg"]["seconds"] == (
        pytest.approx(80)
    )
    assert project(measure_rates(run), cls, 10)["stages"]["cells"]["seg"]["seconds"] == (
        pytest.approx(40)
    )


def test_the_share_of_epochs_run_is_of_the_tasks_own_epochs(run):
    # The source's seg cells ran 5, 5 and 10 epochs of their task's 20: a share of 1/3.
    source = load_config(CONFIGS / "smoke.yaml", [*GRID, "downstream.seg.train.epochs=20"])
    (run / "config.yaml").write_text(dump_config(source))
    assert measure_rates(run).epochs_share == {"seg": pytest.approx(1 / 3)}


def test_parts_of_a_grid_run_apart_pool_their_stages_but_not_the_days_between(run, tmp_path):
    # The fixture's cells move to a second folder, a day later (another machine's lease):
    # the unit costs are those of one folder, and the wall time is each part's own.
    part = tmp_path / "cells-part"
    (part / "cells").mkdir(parents=True)
    (part / "config.yaml").write_text((run / "config.yaml").read_text())
    day = 86400
    for folder in sorted((run / "cells").iterdir()):
        done = json.loads((folder / "done.json").read_text())
        end = datetime.strptime(done["finished"], "%Y-%m-%dT%H:%M:%S%z").timestamp() + day
        done["finished"] = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
        (folder / "done.json").write_text(json.dumps(done))
        folder.rename(part / "cells" / folder.name)
    whole = {
        "generator_per_image": {"unconditional": pytest.approx(0.1)},
        "cell_per_image_epoch": {"seg": pytest.approx(0.05)},
        "epochs_share": {"seg": pytest.approx(2 / 3)},
    }
    pooled = measure_rates([run, part, run])  # a folder named twice counts once
    assert {k: getattr(pooled, k) for k in whole} == whole
    assert pooled.busy_seconds == pytest.approx(153)
    # Generators part: 0 to 113 s; cells part: 113 to 143 s a day later (30 s).
    assert pooled.wall_seconds == pytest.approx(113 + 30)
    assert measure_rates(run).cell_per_image_epoch == {}  # alone, the first part lacks cells

    wider = load_config(CONFIGS / "smoke.yaml", [*GRID, "downstream.seg.channels=[8,16]"])
    (part / "config.yaml").write_text(dump_config(wider))
    with pytest.raises(ProjectionError, match="differ in downstream.seg: their unit costs"):
        measure_rates([run, part])
