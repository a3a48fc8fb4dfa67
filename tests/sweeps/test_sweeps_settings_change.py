"""A sweep into a folder swept before with other settings: the cells those settings change
are recomputed (the others found in their stage folders), MLflow shows one result per cell
and per synthetic set, that of the settings swept last, and ``sync`` rebuilds that view."""

from __future__ import annotations

import json

from benchmark.config import load_config
from benchmark.tracking import default_tracking_uri
from reports.collect import collect_fidelity, collect_runs
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
