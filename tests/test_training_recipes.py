"""The shared loop's optimisers and learning-rate schedules (``downstream.train``):
AdamW or SGD, cosine, constant, poly (nnU-Net) or plateau (SB), checked by hand."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmark.__main__ import main
from benchmark.config import ConfigError, load_config
from benchmark.data.phantom import make_phantom
from downstream.ensemble import fit_ensemble
from downstream.segmentation import build_model
from downstream.training import build_optimizer, build_schedule, fit, step_schedule
from tests.conftest import CONFIGS
from tests.test_training import ScriptedSelectionTask


def train_cfg(**changes):
    return dataclasses.replace(load_config(CONFIGS / "smoke.yaml").downstream.train, **changes)


def lrs_after(cfg, selections):
    """The learning rate after each epoch's step of ``cfg``'s schedule (initial lr 1)."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([weight], dataclasses.replace(cfg, lr=1.0))
    schedule = build_schedule(optimizer, cfg)
    out = []
    for selection in selections:
        optimizer.step()  # an epoch's steps (no gradient: no change), then its schedule
        step_schedule(schedule, selection)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_each_optimiser_is_built_with_its_settings():
    weight = torch.nn.Parameter(torch.zeros(1))
    sgd = build_optimizer([weight], train_cfg(optimizer="sgd", momentum=0.99, nesterov=True))
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.99, True, 1e-4)
    adamw = build_optimizer([weight], train_cfg())
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["lr"] == 3e-3


def test_schedules_by_hand():
    flat = [0.5] * 4
    # Poly over 4 epochs: (1 - e/4) ** 0.9 after epoch e; 0 after the last.
    poly = [0.75**0.9, 0.5**0.9, 0.25**0.9, 0.0]
    assert lrs_after(train_cfg(epochs=4, scheduler="poly"), flat) == pytest.approx(poly)
    cosine = [(1 + torch.cos(torch.tensor(e * torch.pi / 4)).item()) / 2 for e in range(1, 5)]
    assert lrs_after(train_cfg(epochs=4), flat) == pytest.approx(cosine, abs=1e-7)
    assert lrs_after(train_cfg(epochs=4, scheduler="constant"), flat) == [1.0] * 4


def test_plateau_lowers_the_rate_after_its_patience_without_a_better_selection():
    # Patience 2: the third epoch in a row without a better score lowers the rate 10x; a
    # better score (2) resets the count.
    cfg = train_cfg(scheduler="plateau", plateau_factor=0.1, plateau_patience=2)
    lrs = lrs_after(cfg, [1, 1, 1, 1, 2, 2, 2, 2])
    assert lrs == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01])
    # The same at negative scores (cls selects on minus the loss).
    assert lrs_after(cfg, [-1] * 4) == pytest.approx([1, 1, 1, 0.1])


@pytest.mark.parametrize(
    ("curve", "selection", "lrs"),
    [
        # The curve stalls but the selection score improves: the rate stays.
        ([1.0] * 4, [-4.0, -3.0, -2.0, -1.0], [1e-3] * 4),
        # The selection score stalls after epoch 1 (at a negative value, as cls's minus the
        # loss): halved after every epoch without improvement (patience 0), so from epoch 3,
        # whatever the curve does.
        ([0.1, 0.2, 0.3, 0.4], [-1.0] * 4, [1e-3, 1e-3, 5e-4, 2.5e-4]),
    ],
)
def test_fit_steps_plateau_on_the_selection_score(smoke_config, curve, selection, lrs):
    data = make_phantom(4, 32, seed=0)
    cfg = train_cfg(
        lr=1e-3, epochs=4, patience=10, scheduler="plateau", plateau_factor=0.5, plateau_patience=0
    )
    task = ScriptedSelectionTask(curve, selection)
    model = build_model(smoke_config.downstream.seg)
    cpu = torch.device("cpu")
    result = fit(model, task, data.split("train"), data.split("val"), cfg, cpu, 0, "t", False)
    assert result.lr == pytest.approx(lrs)


def test_the_ensemble_refuses_a_plateau_schedule(smoke_config):
    # One optimiser steps every member at one rate; the caller trains them one at a time.
    data = make_phantom(4, 32, seed=0)
    task = ScriptedSelectionTask([1.0] * 2, [1.0] * 2)
    models = [build_model(smoke_config.downstream.seg) for _ in range(2)]
    train, val = data.split("train"), data.split("val")
    with pytest.raises(ValueError, match="plateau schedule follows each member"):
        fit_ensemble(
            models, task, [train] * 2, [val] * 2, train_cfg(scheduler="plateau"),
            torch.device("cpu"), [0, 1], progress=False,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("downstream.train.nesterov=true", "nesterov needs optimizer sgd with momentum > 0"),
        ("downstream.train.momentum=1", r"downstream.train.momentum must be in \[0, 1\)"),
        ("downstream.cls.train.plateau_factor=1.5", "downstream.cls.train.plateau_factor must"),
        ("downstream.train.optimizer=adam", r"downstream.train.optimizer: 'adam' is not one of"),
        ("downstream.seg.train.scheduler=step", r"downstream.seg.train.scheduler: 'step' is"),
    ],
)
def test_a_bad_recipe_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "smoke.yaml", [override])


def test_a_cell_logs_its_learning_rate_per_epoch(tmp_path, capsys):
    # A cls cell on DE's recipe (SGD) with nnU-Net's poly schedule over 3 epochs, lr 1e-2.
    args = ["run", "--config", "smoke", "--task", "cls", "--out", str(tmp_path), "--json"]
    recipe = ["optimizer=sgd", "scheduler=poly", "lr=1e-2", "patience=5"]
    sets = [x for r in recipe for x in ("--set", f"downstream.cls.train.{r}")]
    assert main([*args, *sets, "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    curves = json.loads((Path(out["stage"]) / "curves.json").read_text())
    assert curves["train/lr"] == pytest.approx([1e-2, 1e-2 * (2 / 3) ** 0.9, 1e-2 * (1 / 3) ** 0.9])


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_sgd_trains_fused_under_autocast_on_a_gpu(smoke_config, precision):
    # fit's CUDA path: torch's fused SGD kernel, autocast, and for fp16 the loss scaler
    # whose scale the fused kernel takes.
    from downstream.segmentation import SegmentationTask

    data = make_phantom(4, 32, seed=0)
    cfg = train_cfg(
        epochs=3, patience=5, optimizer="sgd", nesterov=True, scheduler="poly", precision=precision
    )
    model = build_model(smoke_config.downstream.seg)
    task = SegmentationTask(augment=False)
    cuda = torch.device("cuda")
    result = fit(model, task, data.split("train"), data.split("val"), cfg, cuda, 0, "gpu", False)
    assert len(result.lr) == 3 and result.lr[1] < result.lr[0]
    assert all(torch.isfinite(torch.tensor(result.train_loss)))
