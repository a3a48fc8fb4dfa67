"""``downstream.<task>.train``: each task's own training settings over ``downstream.train``.

What a task trains with, what refuses a bad value (named by its task), which stage keys a
task's settings enter (its own cells and judges only), how ensembles group, and a cell that
really trains with them.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml

from benchmark.__main__ import main
from benchmark.config import ConfigError, dump_config, load_config
from benchmark.grid import GridCell, Mode, Protocol, Task
from sweeps.cell import ensemble_group
from sweeps.fidelity import quality_stage, segmenter_stage
from sweeps.workspace import Workspace
from tests.conftest import CONFIGS

SEG = GridCell(Task.SEG, Mode.NONE, None, 0.0, Protocol.MIX, 1.0, 0)
CLS = GridCell(Task.CLS, Mode.NONE, None, 0.0, Protocol.MIX, 1.0, 0)


def smoke(*overrides: str):
    return load_config(CONFIGS / "smoke.yaml", list(overrides))


def test_a_task_takes_its_own_values_and_the_shared_ones_for_the_rest():
    cfg = smoke("downstream.cls.train.lr=3e-4", "downstream.cls.train.epochs=7")
    cls = cfg.downstream.train_for(Task.CLS)
    assert (cls.lr, cls.epochs) == (3e-4, 7)
    # The rest is downstream.train's, and the other tasks have downstream.train whole.
    shared = cfg.downstream.train
    assert (cls.batch_size, cls.patience, cls.weight_decay) == (8, 3, shared.weight_decay)
    assert cfg.downstream.train_for("seg") == shared == cfg.downstream.train_for("vlseg")
    assert shared.lr == 3e-3 and shared.epochs == 3  # smoke.yaml, untouched


def test_the_resolved_config_round_trips_with_a_tasks_values(tmp_path):
    cfg = smoke("downstream.vlseg.train.batch_size=4", "downstream.vlseg.train.scheduler=constant")
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert again.downstream.train_for("vlseg").batch_size == 4
    assert yaml.safe_load(path.read_text())["downstream"]["seg"]["train"]["lr"] is None


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "downstream.cls.train.lr=0",
            r"smoke.yaml with --set downstream.cls.train.lr=0: downstream.cls.train.lr must be > 0",
        ),
        ("downstream.seg.train.steps_per_epoch=-2", r"downstream.seg.train.steps_per_epoch must"),
        ("downstream.vlseg.train.precision=fp8", r"downstream.vlseg.train.precision: 'fp8' is"),
        ("downstream.cls.train.epoch=3", r"unknown key\(s\) downstream.cls.train.epoch; valid"),
        ("downstream.cls.train.lr=fast", r"downstream.cls.train.lr: expected a number"),
    ],
)
def test_a_bad_value_is_refused_naming_its_task(override, message):
    with pytest.raises(ConfigError, match=message):
        smoke(override)


def test_a_cell_key_holds_its_own_tasks_settings_only(tmp_path):
    def specs(*overrides):
        ws = Workspace(smoke(*overrides), tmp_path, progress=False)
        return ws.cell_spec(SEG, None), ws.cell_spec(CLS, None)

    seg, cls = specs()
    # Another task's training or model settings leave a cell's key as it is...
    assert specs("downstream.cls.train.lr=3e-4") == (seg, specs("downstream.cls.train.lr=3e-4")[1])
    assert specs("downstream.cls.train.lr=3e-4")[1] != cls
    assert specs("downstream.vlseg.channels=[4,8]") == (seg, cls)
    assert specs("downstream.cls.select_on=accuracy")[0] == seg
    # ...while its own, and the shared section, change it.
    assert specs("downstream.seg.train.epochs=5")[0] != seg
    changed = specs("downstream.train.weight_decay=0.01")
    assert changed[0] != seg and changed[1] != cls
    # The key records the values the cell trains with, whichever section they came from.
    own = specs("downstream.cls.train.lr=3e-4")[1]["downstream"]
    assert own["train"]["lr"] == 3e-4 and "train" not in own["model"]


def test_judges_train_with_their_tasks_settings(tmp_path):
    # A cls value reaches the quality judge (a cls model) and leaves the segmenter's stage.
    base = Workspace(smoke(), tmp_path, progress=False)
    tuned = Workspace(smoke("downstream.cls.train.lr=3e-4"), tmp_path, progress=False)
    assert segmenter_stage(tuned).stage.path == segmenter_stage(base).stage.path
    first, second = quality_stage(base).stage, quality_stage(tuned).stage
    assert first.path != second.path and second.computed
    spec = json.loads((second.path / "spec.json").read_text())["spec"]
    assert spec["train"]["lr"] == 3e-4 and spec["model"]["target"] == "quality"


def test_ensembles_group_by_ratio_where_the_cells_task_has_a_step_budget():
    cfg = smoke("downstream.cls.train.steps_per_epoch=2")
    group = ensemble_group(cfg.downstream)

    def at(cell: GridCell, ratio: float, seed: int) -> GridCell:
        return GridCell(cell.task, Mode.ORACLE, None, ratio, cell.protocol, 1.0, seed)

    # cls trains on a budget: its ratios join one ensemble; seg trains by passes: they don't.
    assert group(at(CLS, 1.0, 0)) == group(at(CLS, 2.0, 1))
    assert group(at(SEG, 1.0, 0)) != group(at(SEG, 2.0, 0))
    assert group(at(SEG, 1.0, 0)) == group(at(SEG, 1.0, 1))


def test_run_trains_a_cls_cell_with_its_tasks_epochs_and_batch(tmp_path, capsys):
    args = ["run", "--config", "smoke", "--task", "cls", "--out", str(tmp_path), "--json"]
    sets = ["--set", "downstream.cls.train.epochs=1", "--set", "downstream.cls.train.batch_size=4"]
    # Patience 3 (smoke.yaml) would run all 3 shared epochs: one shows the task's value won.
    assert main([*args, *sets, "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((Path(out["stage"]) / "metrics.json").read_text())
    assert summary["epochs_run"] == 1
    assert summary["optimiser_steps"] == -(-summary["n_real_train"] // 4)
    resolved = yaml.safe_load((Path(out["stage"]) / "config.yaml").read_text())
    assert resolved["downstream"]["cls"]["train"]["epochs"] == 1


def test_a_config_with_a_tasks_values_pickles_for_the_worker_processes():
    # Workers are spawned: the config reaches them pickled, its per-task sections included.
    cfg = smoke("downstream.cls.train.lr=3e-4")
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.downstream.train_for("cls").lr == 3e-4
