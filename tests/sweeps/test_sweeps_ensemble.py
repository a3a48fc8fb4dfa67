"""``sweep.ensemble``: the seeds of a cell trained together as one batched ensemble give
the results of training them one at a time, and each still fails on its own."""

import copy
import dataclasses
import json
import shutil

import pytest
import torch

from benchmark.config import load_config
from benchmark.data.phantom import make_phantom
from benchmark.grid import Protocol, Task
from downstream.protocols import run_protocol, run_protocol_together
from downstream.registry import build_model, build_task
from sweeps.grid import run_sweep
from tests.conftest import CONFIGS

GRID = [
    "grid.tasks=[seg]",
    "grid.modes=[none,unconditional]",
    "grid.ratios=[1]",
    "grid.protocols=[pretrain]",
    "grid.seeds=[0,1,2]",
    "downstream.seg.channels=[4,8]",
    "fidelity.enabled=false",
]


# nnU-Net's recipe: SGD with Nesterov momentum and a poly schedule (downstream.train).
SGD_POLY = {"optimizer": "sgd", "momentum": 0.99, "nesterov": True, "scheduler": "poly"}


# nnU-Net's network: DynUNet, whose deeply supervised output is (B, 2, 4, H, W) in training.
DYNUNET = ["downstream.seg.network=dynunet", "downstream.seg.channels=[4,8,16]"]
DYNUNET += ["downstream.seg.deep_supervision=1"]


@pytest.mark.parametrize(
    ("task_kind", "protocol", "steps_per_epoch", "recipe", "network"),
    [
        (Task.SEG, Protocol.MIX, 0, {}, []),
        (Task.SEG, Protocol.PRETRAIN, 0, {}, []),
        (Task.SEG, Protocol.MIX, 3, {}, []),  # 3 steps per epoch: the 8-batch pass spans epochs
        (Task.SEG, Protocol.MIX, 0, SGD_POLY, []),
        (Task.SEG, Protocol.MIX, 0, {}, DYNUNET),
        (Task.CLS, Protocol.MIX, 0, {}, []),
        (Task.VLSEG, Protocol.SYNTHETIC_ONLY, 0, {}, []),
    ],
)
def test_protocols_together_train_what_they_train_alone(
    task_kind, protocol, steps_per_epoch, recipe, network
):
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        ["downstream.seg.channels=[4,8]", "downstream.cls.channels=[4,8]"]
        + ["downstream.vlseg.channels=[4,8]", *network],
    )
    data = make_phantom(6, 32, seed=0)
    real, val = data.split("train"), data.split("val")
    synth = make_phantom(6, 32, seed=1).split("train").subset(list(range(len(real))))
    task, _ = build_task(task_kind, cfg.downstream, prompt_level=3)
    train_cfg = dataclasses.replace(
        cfg.downstream.train, epochs=2, batch_size=4, steps_per_epoch=steps_per_epoch, **recipe
    )
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model(task_kind, cfg.downstream, 32))
    cpu = torch.device("cpu")
    alone = [
        run_protocol(protocol, copy.deepcopy(m), task, real, synth, val, train_cfg, cpu, s, False)
        for s, m in enumerate(models)
    ]
    together = run_protocol_together(
        protocol, [copy.deepcopy(m) for m in models], task, [real] * 2, [synth] * 2, val,
        train_cfg, cpu, [0, 1], False,
    )  # fmt: skip
    x = torch.from_numpy(val.images[:, None]).float()
    for a, t in zip(alone, together):
        assert t.final.val_score == pytest.approx(a.final.val_score, abs=1e-4)
        assert t.final.steps == a.final.steps > 0
        assert t.final.lr == a.final.lr and len(t.final.lr) == len(t.final.val_score)
        if steps_per_epoch:
            assert t.final.steps == 2 * steps_per_epoch
        assert (t.pretrain is None) == (a.pretrain is None)
        if a.pretrain is not None:
            assert t.pretrain.val_score == pytest.approx(a.pretrain.val_score, abs=1e-4)
            # The fine-tune has an optimiser of its own, as run_protocol's has.
            assert t.final.optimizer_id != t.pretrain.optimizer_id
    if task_kind is not Task.SEG:
        return
    # The trained models' outputs, together and alone, against the gap between the two
    # seeds' models. Not to rounding: Adam scales a gradient by its running size, so the
    # rounding-level gradients of parameters that barely matter (the conv biases that
    # InstanceNorm cancels: gradient 0 but for rounding) take lr-sized steps either way,
    # and the batched and the single kernels round differently. Measured on the seg mix
    # case: biases 0.017 apart with outputs 1e-6 apart (torch 2.13), and on torch 2.4, the
    # oldest admitted, outputs up to 0.0055 apart while the validation Dice agreed to 2e-5.
    with torch.no_grad():
        outputs = [[r.final.model.eval()(x) for r in runs] for runs in (alone, together)]
    seeds_gap = (outputs[0][0] - outputs[0][1]).abs().max()
    for a, t in zip(*outputs):
        assert (t - a).abs().max() < 0.005 * seeds_gap  # 6e-4 of it measured on torch 2.4


def cell_results(out):
    results = {}
    for folder in (out / "cells").iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            metrics = json.loads((folder / "metrics.json").read_text())
            done = json.loads((folder / "done.json").read_text())
            results[metrics["cell_key"]] = (metrics, done)
    return results


def test_sweep_trains_a_cells_seeds_together(tmp_path):
    alone = load_config(CONFIGS / "smoke.yaml", GRID)
    together = load_config(CONFIGS / "smoke.yaml", [*GRID, "sweep.ensemble=3"])
    first = run_sweep(alone, tmp_path / "alone", progress=False)
    second = run_sweep(together, tmp_path / "together", progress=False)
    assert not first.failed and not second.failed
    a, t = cell_results(tmp_path / "alone"), cell_results(tmp_path / "together")
    assert a.keys() == t.keys() and len(a) == 6  # real-only and pretrain, 3 seeds each
    for key, (metrics, done) in t.items():
        assert metrics["ensemble"] == 3
        assert "ensemble" not in a[key][0]
        assert metrics["test"]["dice_mean"] == pytest.approx(
            a[key][0]["test"]["dice_mean"], abs=1e-3
        )
        assert metrics["epochs_run"] == a[key][0]["epochs_run"]
        assert metrics["optimiser_steps"] == a[key][0]["optimiser_steps"] > 0
        assert done["seconds"] > 0  # its share of the shared training
    # The stage keys do not depend on how the cells were trained: a rerun reuses them.
    again = run_sweep(alone, tmp_path / "together", progress=False)
    assert again.computed == [] and not again.failed


def test_a_step_budget_trains_a_modes_ratios_together(tmp_path):
    # mix at ratios 0.5 and 1: training sets of two sizes, one synthetic set. Under a budget
    # the two unconditional cells are one ensemble; real only has no partner.
    grid = [*GRID, "grid.protocols=[mix]", "grid.ratios=[0.5,1]", "grid.seeds=[0]"]
    grid += ["downstream.train.steps_per_epoch=2"]
    alone = load_config(CONFIGS / "smoke.yaml", grid)
    together = load_config(CONFIGS / "smoke.yaml", [*grid, "sweep.ensemble=4"])
    assert not run_sweep(alone, tmp_path / "alone", progress=False).failed
    for kind in ("data", "gen", "synth"):  # the stages before the cells: reused, not retrained
        shutil.copytree(tmp_path / "alone" / kind, tmp_path / "together" / kind)
    assert not run_sweep(together, tmp_path / "together", progress=False).failed
    a, t = cell_results(tmp_path / "alone"), cell_results(tmp_path / "together")
    assert a.keys() == t.keys() and len(a) == 3
    sizes = {m["n_real_train"] + m["n_synthetic"] for m, _ in t.values()}
    assert len(sizes) == 3  # real only, ratio 0.5, ratio 1
    for key, (metrics, _) in t.items():
        assert metrics.get("ensemble") == (None if "-none-" in key else 2)
        assert metrics["optimiser_steps"] == a[key][0]["optimiser_steps"]
        assert metrics["test"]["dice_mean"] == pytest.approx(
            a[key][0]["test"]["dice_mean"], abs=1e-3
        )


def test_a_failing_ensemble_runs_its_cells_one_at_a_time(tmp_path, monkeypatch):
    import sweeps.grid

    def broken(ws, cells):
        raise ValueError("cannot stack these members")

    monkeypatch.setattr(sweeps.grid, "cell_stages_together", broken)
    cfg = load_config(CONFIGS / "smoke.yaml", [*GRID, "grid.modes=[none]", "sweep.ensemble=3"])
    result = run_sweep(cfg, tmp_path / "out", progress=False)
    assert not result.failed and len(result.computed) == 3
    assert all("ensemble" not in m for m, _ in cell_results(tmp_path / "out").values())


@pytest.mark.gpu
def test_protocols_together_on_cuda():
    """bf16 on the GPU: the ensemble's members end close to their runs alone."""
    cfg = load_config(CONFIGS / "smoke.yaml", ["downstream.seg.channels=[4,8]"])
    data = make_phantom(6, 32, seed=0)
    real, val = data.split("train"), data.split("val")
    task, _ = build_task(Task.SEG, cfg.downstream)
    train_cfg = dataclasses.replace(cfg.downstream.train, epochs=2, batch_size=4)
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(Task.SEG, cfg.downstream, 32)
    alone = run_protocol(
        Protocol.MIX, copy.deepcopy(model), task, real, None, val, train_cfg, cuda, 0, False
    )
    together = run_protocol_together(
        Protocol.MIX, [copy.deepcopy(model) for _ in range(2)], task, [real] * 2, [None] * 2, val,
        train_cfg, cuda, [0, 0], False,
    )  # fmt: skip
    for t in together:
        assert t.final.val_score == pytest.approx(alone.final.val_score, abs=0.05)


def test_an_interrupted_ensemble_fails_every_claimed_cell_at_once(tmp_path, monkeypatch):
    import optuna

    import sweeps.grid

    def interrupted(ws, cells):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweeps.grid, "cell_stages_together", interrupted)
    cfg = load_config(CONFIGS / "smoke.yaml", [*GRID, "grid.modes=[none]", "sweep.ensemble=3"])
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, out, progress=False)
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{out / 'optuna.db'}")
    failed = [t for t in study.trials if t.state is optuna.trial.TrialState.FAIL]
    assert len(failed) == 3 and {t.user_attrs["error"] for t in failed} == {"interrupted"}
