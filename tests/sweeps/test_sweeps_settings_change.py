"""A sweep into a folder swept before with other settings: the cells those settings change
are recomputed (the others found in their stage folders), MLflow shows one result per cell
and per synthetic set, that of the settings swept last, and ``sync`` rebuilds that view."""

from __future__ import annotations

import json

import pandas as pd

from benchmark.config import load_config
from benchmark.tracking import default_tracking_uri
from reports.collect import collect_fidelity, collect_runs, collect_settings
from reports.report import write_report
from reports.settings import differing
from sweeps.grid import run_sweep
from sweeps.sync import sync
from tests.conftest import CONFIGS

SMALL = [
    "data.phantom_patients=8",
    "generator.train_steps=5",
    "generator.sample_steps=2",
    "downstream.train.epochs=1",
    "downstream.seg.channels=[4,8]",
    "grid.ratios=[1]",
    "fidelity.encoder_steps=5",
    "fidelity.segmenter_epochs=1",
    "fidelity.quality_epochs=1",
]
CELLS = {"seg-none-P_-r0-mix-f1-s0", "seg-unconditional-P_-r1-mix-f1-s0"}


def _shown(out, uri: str | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """What a report reads: {cell key: stage} of the cell runs, {mode: k} of the fidelity
    runs (one row per cell and per set, or the assertion fails)."""
    uri = uri or default_tracking_uri(out)
    runs, fid = collect_runs(uri, "smoke"), collect_fidelity(uri, "smoke")
    assert runs["cell_key"].is_unique and fid["mode"].is_unique
    return dict(zip(runs["cell_key"], runs["stage"])), dict(
        zip(fid["mode"], fid["recipe.k"].astype(float))
    )


def test_changed_settings_recompute_what_they_change_and_mlflow_shows_the_last(tmp_path):
    out = tmp_path / "run"
    first = load_config(CONFIGS / "smoke.yaml", SMALL)
    changed = load_config(CONFIGS / "smoke.yaml", [*SMALL, "downstream.train.epochs=2"])
    remeasured = load_config(CONFIGS / "smoke.yaml", [*SMALL, "fidelity.k=2"])

    a = run_sweep(first, out, progress=False)
    assert set(a.computed) == CELLS and not a.failed
    stages_a, k_a = _shown(out)
    generators = sorted(p.name for p in (out / "gen").iterdir() if p.is_dir())

    # Another downstream setting changes every cell: both are trained again, the generator
    # and the synthetic set are reused, and the report reads the new cells only.
    b = run_sweep(changed, out, progress=False)
    assert set(b.computed) == CELLS and not b.failed
    stages_b, _ = _shown(out)
    assert stages_b.keys() == CELLS and not set(stages_b.values()) & set(stages_a.values())
    assert sorted(p.name for p in (out / "gen").iterdir() if p.is_dir()) == generators
    for stage in stages_b.values():
        assert json.loads((out / "cells" / stage / "metrics.json").read_text())["epochs_run"] == 2

    # Back to the first settings: nothing is trained, their results are shown again.
    again = run_sweep(first, out, progress=False)
    assert again.computed == [] and not again.failed
    assert _shown(out)[0] == stages_a

    # A fidelity setting: the cells are reused, the set is measured again and only the
    # new measurement is shown.
    c = run_sweep(remeasured, out, progress=False)
    assert c.computed == [] and not c.failed
    stages_c, k_c = _shown(out)
    assert stages_c == stages_a and k_a == {"unconditional": 3.0} and k_c == {"unconditional": 2.0}

    # Into an empty tracking store (MLflow lost), sync logs the stages the last sweep
    # settled on, not the older ones the folder also holds.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    counts = sync(out, fresh, progress=False)
    assert counts["cell"] == 2 and counts["fidelity"] == 1
    assert _shown(out, fresh) == (stages_a, {"unconditional": 2.0})


def _cell_stages(out) -> dict[str, str]:
    """{cell key: stage} of the cell runs a report reads (one per cell)."""
    runs = collect_runs(default_tracking_uri(out), "smoke")
    assert runs["cell_key"].is_unique
    return dict(zip(runs["cell_key"], runs["stage"]))


def test_one_tasks_settings_recompute_that_tasks_cells_only(tmp_path):
    out = tmp_path / "run"
    grid = [*SMALL, "grid.tasks=[seg,cls]", "grid.modes=[none]", "downstream.cls.channels=[4,8]"]
    first = load_config(CONFIGS / "smoke.yaml", grid)
    cls_lr = load_config(CONFIGS / "smoke.yaml", [*grid, "downstream.cls.train.lr=3e-4"])
    seg_cell, cls_cell = "seg-none-P_-r0-mix-f1-s0", "cls-none-P_-r0-mix-f1-s0"

    a = run_sweep(first, out, progress=False)
    assert set(a.computed) == {seg_cell, cls_cell} and not a.failed
    stages_a = _cell_stages(out)
    # cls's learning rate: the cls cell is trained again, the seg cell is found as it was,
    # and the report shows both at the new settings (seg's result being the same).
    b = run_sweep(cls_lr, out, progress=False)
    assert b.computed == [cls_cell] and not b.failed
    stages_b = _cell_stages(out)
    assert stages_b[seg_cell] == stages_a[seg_cell]
    assert stages_b[cls_cell] != stages_a[cls_cell]
    used = json.loads((out / "cells" / stages_b[cls_cell] / "spec.json").read_text())["spec"]
    assert used["downstream"]["train"]["lr"] == 3e-4


def test_a_grid_that_leaves_cells_out_shows_their_settings_apart(tmp_path):
    """Each cell run logs the settings that decided it; a later sweep of other settings
    over fewer cells leaves the others' runs as they were, and the report's table that
    holds both names the setting that differs."""
    out = tmp_path / "run"
    uri = default_tracking_uri(out)
    run_sweep(load_config(CONFIGS / "smoke.yaml", SMALL), out, progress=False)
    per_run = collect_settings(uri, "smoke").set_index("run_id")
    runs = collect_runs(uri, "smoke")
    assert (runs["threads"] >= 1).all()  # and the threads each was trained with
    keys = dict(zip(runs["run_id"], runs["cell_key"]))
    logged = {keys[r]: row.dropna().to_dict() for r, row in per_run.iterrows()}
    base, synthetic = (
        logged["seg-none-P_-r0-mix-f1-s0"],
        logged["seg-unconditional-P_-r1-mix-f1-s0"],
    )
    assert base["downstream.seg.channels"] == "[4, 8]"
    assert base["downstream.seg.train.epochs"] == "1"  # the resolved value, under its task
    assert {"data.size", "downstream.augment", "grid.subset_seed", "cell_format"} <= set(base)
    assert not any(k.startswith("generator.") for k in base)  # trained on real images only
    assert synthetic["generator.train_steps"] == "5" and synthetic["generator.sample_steps"] == "2"
    assert "generator.compile" not in synthetic  # speed only: it changes no result
    assert "downstream.cls.channels" not in synthetic  # another task's settings

    wider = [*SMALL, "downstream.seg.channels=[4,8,16]", "grid.modes=[none]"]
    again = run_sweep(load_config(CONFIGS / "smoke.yaml", wider), out, progress=False)
    assert again.computed == ["seg-none-P_-r0-mix-f1-s0"]
    made = write_report(uri, "smoke", tmp_path / "report", pdf=False)
    de = next(p for p in made["tables"] if p.name.startswith("de-")).read_text()
    assert "Mixed settings: its runs differ in downstream.seg.channels: [4, 8" in de
    assert "The cell runs differ in downstream.seg.channels (settings.csv)" in made["summary"]
    table = pd.read_csv(tmp_path / "report" / "settings.csv")
    assert sorted(table["downstream.seg.channels"]) == ["[4, 8, 16]", "[4, 8]"]


def test_cells_tuned_one_by_one_log_the_search_not_their_winners(tmp_path):
    """Under sweep.tune_scope: cell every cell finds its own training values by design: its
    settings name the search, so that a table of such cells is not called mixed."""
    out = tmp_path / "run"
    tuned = [*SMALL, "grid.modes=[none]", "grid.seeds=[0,1]", "sweep.tune=true"]
    tuned += ["sweep.tune_scope=cell", "sweep.tune_trials=2", "sweep.tune_epochs=[1,2]"]
    result = run_sweep(load_config(CONFIGS / "smoke.yaml", tuned), out, progress=False)
    assert len(result.computed) == 2 and not result.failed
    per_run = collect_settings(default_tracking_uri(out), "smoke")
    assert len(per_run) == 2 and per_run["settings"].nunique() == 1
    for tuned_key in ("lr", "weight_decay", "batch_size", "epochs"):
        assert f"downstream.seg.train.{tuned_key}" not in per_run.columns
    assert "downstream.seg.train.scheduler" in per_run.columns  # not searched: a setting
    assert set(per_run["sweep.tune_scope"]) == {"cell"}
    assert set(per_run["sweep.tune_epochs"]) == {"[1, 2]"}
    assert differing(per_run) == {}
