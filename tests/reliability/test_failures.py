"""A cell whose training goes NaN or diverges fails with its reason while the sweep goes
on; the summary and the report list it; a later sweep without the fault finishes it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fault_support import Child, stage_problems, sweep_argv
from sweeps_support import SMOKE_KEYS

from benchmark.config import load_config
from benchmark.data.phantom import make_phantom
from benchmark.downstream_config import TrainConfig
from downstream.training import fit
from sweeps.grid import work_order
from sweeps.plan import grid_cells

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_nan_loss_fails_one_cell_and_the_sweep_goes_on(tmp_path, reliability_record):
    out = tmp_path / "smoke"
    # The first downstream loss of the sweep becomes NaN: that of the first queued cell.
    smoke = load_config(CONFIGS / "smoke.yaml")
    first = work_order(smoke, grid_cells(smoke))[0].key()
    sweep = Child(sweep_argv(out), tmp_path / "nan.log", fault="train.loss=nan")
    assert sweep.wait() == 1, sweep.output()[-3000:]
    summary = sweep.summary()
    assert list(summary["failed"]) == [first]
    assert "FloatingPointError" in summary["failed"][first]
    assert "loss became nan" in summary["failed"][first]
    assert summary["computed"] == len(SMOKE_KEYS) - 1  # the others ran
    assert f"failed {first}: FloatingPointError" in sweep.output()
    assert not stage_problems(out)  # no stage folder for the failed cell, not even a temp one
    assert not [
        p for p in (out / "cells").iterdir() if p.name.startswith(first + "-") and p.is_dir()
    ]

    failed_csv = (out / "report" / "failed.csv").read_text()
    assert first in failed_csv and "loss became nan" in failed_csv
    assert "Failed cells" in (out / "report" / "report.tex").read_text()

    rerun = Child(sweep_argv(out), tmp_path / "rerun.log")
    assert rerun.wait() == 0, rerun.output()[-3000:]
    again = rerun.summary()
    assert again["failed"] == {} and again["computed"] == 1
    assert not (out / "report" / "failed.csv").exists()  # the report mirrors the store now
    reliability_record("nan", cell=first, lost=0, duplicated=0)


class _Quadratic:
    """A one-parameter task, loss (w - 3)^2: AdamW with a sane step converges, with a step of
    1000 it overshoots to ever larger losses, as a diverging model does."""

    primary_metric = "score"

    def loader(self, data, batch_size, train, seed, device=None):
        return [{"x": torch.zeros(4)} for _ in range(3)]

    def loss(self, model, batch, device):
        return (model.w - 3.0) ** 2 * batch["x"].new_ones(()).sum()

    def validate(self, model, data, device):
        return -float((model.w.detach() - 3.0) ** 2)


class _One(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


@pytest.fixture(scope="module")
def tiny_data():
    return make_phantom(2, 16, 0)


def test_a_diverging_loss_stops_training_with_its_reason(tiny_data):
    cfg = TrainConfig(lr=1000.0, epochs=20, patience=20, scheduler="constant", weight_decay=0)
    with pytest.raises(FloatingPointError, match=r"diverged in epoch \d+: mean loss .* over 100x"):
        fit(_One(), _Quadratic(), tiny_data, tiny_data, cfg, torch.device("cpu"), 0, progress=False)


def test_a_sane_step_on_the_same_task_converges(tiny_data):
    cfg = TrainConfig(lr=0.3, epochs=30, patience=30, scheduler="constant", weight_decay=0)
    result = fit(
        _One(), _Quadratic(), tiny_data, tiny_data, cfg, torch.device("cpu"), 0, progress=False
    )
    assert math.isclose(float(result.model.w.detach()), 3.0, abs_tol=0.3)
