"""``sweep --tune``: per task, a TPE study with a median pruner on the task's real-only
reference cell, whose winners are frozen into that task's ``downstream.<task>.train`` of the
resolved config that the task's cells then train with."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sweeps_support import finish, start_sweep

from benchmark.config import ConfigError, load_config
from sweeps.plan import grid_cells
from sweeps.storage import open_storage
from sweeps.tuning import (
    TUNED,
    consistent,
    reference_cells,
    study_name,
    suggest,
    tune_cell,
    tuned_keys,
    winners,
)
from sweeps.workspace import Workspace
from tests.conftest import CONFIGS

# Five trials, pruning allowed from the third; a learning-rate range wide enough that some
# trials are clearly worse than the median after their first epoch.
TUNE = [
    "--tune",
    "--set",
    "grid.tasks=[seg,cls]",
    "--set",
    "grid.modes=[none]",
    "--set",
    "sweep.tune_trials=5",
    "--set",
    "sweep.tune_startup_trials=2",
    "--set",
    "sweep.tune_lr=[1.0e-5,1.0e-1]",
    "--set",
    "sweep.tune_epochs=[1,2]",
    "--set",
    "sweep.tune_batch_sizes=[4,8]",
    "--set",
    "sweep.tune_optimizers=[adamw,sgd]",
    "--set",
    "sweep.tune_schedulers=[cosine,plateau]",
]
SEARCHED = (*TUNED, "optimizer", "scheduler")


def test_tuning_each_task_prunes_completes_and_freezes_its_winners(tmp_path):
    out = tmp_path / "smoke"
    summary = finish(start_sweep(out, *TUNE))
    assert summary["failed"] == {} and summary["cells"] == 2

    best, states = {}, {}
    storage = f"sqlite:///{out}/optuna.db"
    for task in ("seg", "cls"):
        (name,) = [n for n in optuna.get_all_study_names(storage) if f"-tune-{task}-" in n]
        study = optuna.load_study(study_name=name, storage=storage)
        states[task] = Counter(t.state for t in study.get_trials())
        assert states[task][optuna.trial.TrialState.COMPLETE] >= 1
        assert sum(states[task].values()) == 5
        best[task] = study.best_trial.params
    # The first epoch of lr 1e-5 against 1e-1 is far below the median for seg's Dice.
    assert states["seg"][optuna.trial.TrialState.PRUNED] >= 1

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    for task in ("seg", "cls"):
        own = resolved["downstream"][task]["train"]
        assert {k: own[k] for k in SEARCHED} == pytest.approx(best[task])
        # Each task's cell trained with its own winners, not the other task's.
        key = f"{task}-none-P_-r0-mix-f1-s0"
        cell = next(p for p in (out / "cells").glob(f"{key}-*") if p.is_dir())
        used = yaml.safe_load((cell / "config.yaml").read_text())["downstream"][task]["train"]
        assert {k: used[k] for k in SEARCHED} == pytest.approx(best[task])
    # The shared section is as given: the winners belong to their tasks.
    assert resolved["downstream"]["train"]["lr"] == 3.0e-3
    assert resolved["sweep"]["tune"] is True

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'tuning'")
    parent = client.search_runs([exp.experiment_id], "tags.kind = 'sweep'")[0].info.run_id
    assert len(runs) == 10 and all(r.data.tags["mlflow.parentRunId"] == parent for r in runs)
    pruned = sum(s[optuna.trial.TrialState.PRUNED] for s in states.values())
    assert Counter(r.data.tags["state"] for r in runs)["pruned"] == pruned
    for cell_run in client.search_runs([exp.experiment_id], "tags.kind = 'cell'"):
        task = cell_run.data.tags["task"]
        # ``train.*``: what the cell trained with, whatever section the values came from.
        assert float(cell_run.data.params["train.lr"]) == best[task]["lr"]
        assert int(cell_run.data.params["train.batch_size"]) == best[task]["batch_size"]
        assert cell_run.data.params["train.optimizer"] == best[task]["optimizer"]
        assert cell_run.data.params["train.scheduler"] == best[task]["scheduler"]
    # Every trial searched the recipe too, and logged what it trained with.
    assert {r.data.params["optimizer"] for r in runs} <= {"adamw", "sgd"}
    assert {r.data.params["scheduler"] for r in runs} <= {"cosine", "plateau"}


# Two one-epoch trials of seg's real-only cell: a second each.
SHORT = ["sweep.tune_trials=2", "sweep.tune_epochs=[1,1]", "sweep.tune_batch_sizes=[8]"]


def tune_seg(out, *overrides):
    """Tune seg's reference cell of the smoke grid in ``out``; (winners, trials per study)."""
    cfg = load_config(CONFIGS / "smoke.yaml", [*SHORT, *overrides])
    store = open_storage(None, out, cfg.sweep)
    ws = Workspace(cfg, out, progress=False)
    tuned = tune_cell(ws, store, reference_cells(grid_cells(cfg))["seg"], None, suffix="seg")
    studies = optuna.get_all_study_summaries(store.storage)
    return tuned, sorted(s.n_trials for s in studies)


def test_a_study_is_reused_for_the_same_search_only(tmp_path):
    """A study found by name alone gave its winners back after the search changed (an lr
    outside the new range) and ran no trial; now a changed search is a new study, and the
    same search reuses its study without a trial more."""
    low, trials = tune_seg(tmp_path, "sweep.tune_lr=[1.0e-4,1.0e-3]")
    assert 1e-4 <= low["lr"] <= 1e-3 and trials == [2]
    assert tune_seg(tmp_path, "sweep.tune_lr=[1.0e-4,1.0e-3]") == (low, [2])
    high, trials = tune_seg(tmp_path, "sweep.tune_lr=[0.05,0.1]")
    assert 0.05 <= high["lr"] <= 0.1 and trials == [2, 2]
    # The budget is not the search: more trials extend the study, fewer read its first.
    first, trials = tune_seg(tmp_path, "sweep.tune_lr=[0.05,0.1]", "sweep.tune_trials=1")
    assert trials == [2, 2] and 0.05 <= first["lr"] <= 0.1


def test_the_study_name_follows_what_a_trial_trains():
    def name(*overrides):
        cfg = load_config(CONFIGS / "smoke.yaml", list(overrides))
        ws = Workspace(cfg, "/nonexistent", progress=False)
        ws.__dict__["data_stage"] = SimpleNamespace(digest="data")  # nothing computed
        return study_name(ws, reference_cells(grid_cells(cfg))["seg"], "seg", None)

    base = name()
    assert base.startswith("smoke-tune-seg-")
    for changed in (
        "grid.subset_seed=1",
        "downstream.seg.num_res_units=2",
        "downstream.train.patience=5",
        "downstream.augment=false",
        "sweep.tune_seed=1",
        "sweep.tune_weight_decay=[1.0e-5,1.0e-3]",
        "sweep.tune_optimizers=[adamw,sgd]",
    ):
        assert name(changed) != base, changed
    # What a trial replaces or counts, or another task's settings, leave the study as is.
    for same in (
        "downstream.seg.train.lr=1.0e-2",
        "downstream.train.epochs=7",
        "sweep.tune_trials=40",
        "downstream.cls.train.patience=9",
    ):
        assert name(same) == base, same


def test_each_task_is_tuned_on_its_real_only_cell_and_vlseg_on_a_named_structure():
    # quick.yaml: seg and cls at a quarter of the patients, vlseg at every kind P0-P7. P0
    # names no structure (vlseg then learns their union): P1 is tuned, not the first listed.
    refs = reference_cells(grid_cells(load_config(CONFIGS / "quick.yaml")))
    assert {t: c.key() for t, c in refs.items()} == {
        "seg": "seg-none-P_-r0-mix-f0.25-s0",
        "cls": "cls-none-P_-r0-mix-f0.25-s0",
        "vlseg": "vlseg-none-P1-r0-mix-f0.25-s0",
    }
    only_p0_p3 = load_config(
        CONFIGS / "quick.yaml", ["grid.also=[{tasks: [vlseg], modes: [none], prompts: [P0, P3]}]"]
    )
    assert reference_cells(grid_cells(only_p0_p3))["vlseg"].prompt.value == "P3"
    # The largest real fraction and the first seed come before the prompt kind.
    paper = load_config(CONFIGS / "paper.yaml", ["data.root=/x"])
    assert reference_cells(grid_cells(paper))["seg"].key() == "seg-none-P_-r0-mix-f1-s0"


def test_the_recipe_is_searched_only_where_listed():
    fixed = {"lr": 2e-3, "weight_decay": 1e-5, "batch_size": 8, "epochs": 2}
    # nnU-Net's SGD for cls, as a task may set it: a suggested AdamW must not keep nesterov.
    sgd = ["downstream.cls.train.optimizer=sgd", "downstream.cls.train.nesterov=true"]
    plain = load_config(CONFIGS / "smoke.yaml", sgd)
    assert tuned_keys(plain) == TUNED
    # FixedTrial raises for a parameter it was not given: nothing else is suggested.
    got = suggest(optuna.trial.FixedTrial(fixed), plain, "cls")
    assert (got.lr, got.epochs, got.optimizer, got.nesterov) == (2e-3, 2, "sgd", True)

    search = load_config(
        CONFIGS / "smoke.yaml",
        [*sgd, "sweep.tune_optimizers=[adamw,sgd]", "sweep.tune_schedulers=[cosine,plateau]"],
    )
    assert tuned_keys(search) == (*TUNED, "optimizer", "scheduler")
    trial = optuna.trial.FixedTrial({**fixed, "optimizer": "adamw", "scheduler": "plateau"})
    got = suggest(trial, search, "cls")
    assert (got.optimizer, got.nesterov, got.scheduler) == ("adamw", False, "plateau")
    trial = optuna.trial.FixedTrial({**fixed, "optimizer": "sgd", "scheduler": "cosine"})
    got = suggest(trial, search, "cls")
    assert (got.optimizer, got.nesterov, got.scheduler) == ("sgd", True, "cosine")
    assert consistent({"optimizer": "adamw"}) == {"optimizer": "adamw", "nesterov": False}
    assert consistent({"lr": 1e-3}) == {"lr": 1e-3}
    # A best trial from before the search grew holds no recipe: the task keeps its own.
    assert winners(fixed, search) == fixed
    best = {**fixed, "optimizer": "adamw", "scheduler": "poly", "momentum": 0.5}
    assert winners(best, plain) == fixed  # only what this config searches is frozen
    recipe = {"optimizer": "adamw", "scheduler": "poly", "nesterov": False}
    assert winners(best, search) == {**fixed, **recipe}  # momentum is not searched


def test_an_unknown_recipe_in_the_search_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"sweep.tune_optimizers\[1\].*'adam'.*'adamw'"):
        load_config(CONFIGS / "smoke.yaml", ["sweep.tune_optimizers=[sgd,adam]"])
    with pytest.raises(ConfigError, match=r"sweep.tune_schedulers\[0\].*'step'"):
        load_config(CONFIGS / "smoke.yaml", ["sweep.tune_schedulers=[step]"])
