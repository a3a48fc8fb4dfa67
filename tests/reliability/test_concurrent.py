"""Two sweeps started at once on the same folder and storage: they share the grid, neither
corrupts nor duplicates anything, and both report the whole grid done."""

from __future__ import annotations

from fault_support import Child, stage_problems, sweep_argv, tally
from sweeps_support import SMOKE_KEYS


def test_two_sweeps_at_once_on_one_folder(tmp_path, reliability_record):
    out = tmp_path / "smoke"
    sweeps = [Child(sweep_argv(out), tmp_path / f"sweep-{i}.log") for i in range(2)]
    codes = [s.wait() for s in sweeps]
    assert codes == [0, 0], [s.output()[-3000:] for s in sweeps]
    summaries = [s.summary() for s in sweeps]
    assert all(s["failed"] == {} and s["cells"] == len(SMOKE_KEYS) for s in summaries)
    found = tally(out)
    assert found["lost"] == 0 and found["duplicated"] == 0, found
    assert not found["missing_runs"] and not found["running"] and found["sweep_runs"] == 1
    assert not stage_problems(out)
    # One stage folder per cell: the two processes never computed the same cell twice.
    assert sorted(p.name.rsplit("-", 1)[0] for p in (out / "cells").iterdir() if p.is_dir()) == (
        sorted(SMOKE_KEYS)
    )
    assert len([p for p in (out / "gen").iterdir() if p.is_dir()]) == 1
    reliability_record("concurrent", sweeps=2, lost=found["lost"], duplicated=found["duplicated"])
