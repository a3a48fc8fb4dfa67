"""Nuisance tuning of downstream training: one Optuna study per (task, model) or per cell.

The scientific axes are crossed by the grid; the nuisance hyperparameters of training
(learning rate, weight decay, batch size, epochs, and the optimizer and schedule where
``sweep.tune_optimizers`` / ``sweep.tune_schedulers`` list candidates) are tuned here so that
no arm of the comparison is judged with settings that suit another (Google's tuning playbook).

- ``sweep.tune_scope: reference`` (default): per task a study named
  ``<sweep>-tune-<task>-<hash>`` trains the task's real-only reference cell (largest real
  fraction, first seed) ``sweep.tune_trials`` times; the winners are frozen into
  ``downstream.<task>.train`` of the resolved config, so every cell of that task uses them
  (and its stage key changes with them) and the other tasks keep their own.
- ``sweep.tune_scope: cell``: every cell gets a study of its own with the same budget,
  ``<sweep>-tune-<cell key>-<hash>``, run by the worker that claims the cell.

The hash (:func:`study_name`) covers what a trial's score depends on, so a study is
reused only for the same search of the same training: changed data, synthetic set, task
settings, subset seed or search start a new study (an old one, found by name alone, gave
its stale winners back and ran no trial). The budget is not in it: a larger
``sweep.tune_trials`` extends a study, a smaller one takes the best of its first trials.

TPE proposes values; a median pruner stops a trial whose per-epoch validation score falls
below the median of earlier trials at that epoch. Each trial is an MLflow child run of the
sweep (tag ``kind=tuning``). Only validation images are scored: the test split stays unseen.
A study is tuned under a file lock in the output folder, so one process tunes it and the
others then read the same winners; a rerun resumes a killed study where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import optuna
import torch
from optuna.trial import TrialState

from benchmark.config import Config, to_dict
from benchmark.data.assembly import take_synthetic
from benchmark.data.records import EchoData
from benchmark.downstream_config import TrainConfig
from benchmark.environment import environment, environment_tags
from benchmark.grid import GridCell, Mode, Protocol
from benchmark.grid import Task as GridTask
from benchmark.runtime import resolve_device, seed_everything
from benchmark.stages import Stage, spec_hash
from downstream.protocols import run_protocol
from downstream.registry import build_model, build_task
from downstream.training import Task, fit
from sweeps.storage import SweepStorage
from sweeps.workspace import Workspace

log = logging.getLogger(__name__)

TUNED = ("lr", "weight_decay", "batch_size", "epochs")  # the training settings always tuned
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def reference_cells(cells: list[GridCell]) -> dict[str, GridCell]:
    """Task -> the real-only cell tuned for it: the largest real fraction, the first seed
    and, for a prompted task, the lowest prompt kind that names the structure (P1 where the
    grid has it). P0 comes last: without a structure named, vlseg learns the union of the
    structures (SB's 46 % Dice), a task other than the one its other kinds pose."""

    def rank(cell: GridCell) -> tuple:
        level = cell.prompt.level if cell.prompt is not None else 0
        return (-cell.real_fraction, cell.seed, level == 0 and cell.prompt is not None, level)

    refs: dict[str, GridCell] = {}
    for cell in cells:
        if cell.mode is not Mode.NONE:
            continue
        best = refs.get(cell.task.value)
        if best is None or rank(cell) < rank(best):
            refs[cell.task.value] = cell
    return refs


def tune_reference(
    ws: Workspace, store: SweepStorage, cells: list[GridCell], parent_id: str | None
) -> Config:
    """Tune each task on its reference cell, one task after another; returns the config
    with every task's winners frozen into its ``downstream.<task>.train``. A task of the
    grid without a real-only cell is refused: nothing would say what suits it."""
    refs = reference_cells(cells)
    missing = sorted({c.task.value for c in cells} - set(refs))
    if missing:
        raise ValueError(
            f"sweep.tune needs a real-only reference cell of every task; {missing} "
            f"{'has' if len(missing) == 1 else 'have'} none (grid.include_baseline)"
        )
    cfg = ws.cfg
    for task, cell in sorted(refs.items()):
        winners = tune_cell(ws, store, cell, parent_id, suffix=task)
        cfg = with_train(cfg, winners, cell.task)
    return cfg


def with_train(cfg: Config, values: dict, task: GridTask | str) -> Config:
    """``cfg`` with ``values`` (training settings) set in ``downstream.<task>.train``."""
    name = getattr(task, "value", task)
    section = getattr(cfg.downstream, name)
    section = dataclasses.replace(section, train=dataclasses.replace(section.train, **values))
    downstream = dataclasses.replace(cfg.downstream, **{name: section})
    return dataclasses.replace(cfg, downstream=downstream)


def tuned_keys(cfg: Config) -> tuple[str, ...]:
    """The training settings a trial suggests: TUNED, and the recipe where it is searched."""
    s = cfg.sweep
    return (
        TUNED + ("optimizer",) * bool(s.tune_optimizers) + ("scheduler",) * bool(s.tune_schedulers)
    )


def study_name(ws: Workspace, cell: GridCell, suffix: str, synthetic: Stage | None) -> str:
    """``<sweep>-tune-<suffix>-<hash>``: the hash covers the tuned cell's stage spec (cell
    key, data, ``synthetic`` set, the task's settings but the tuned ones, subset seed) and
    the search (every ``sweep.tune_*`` setting but the budget, ``tune_trials``)."""
    cfg = ws.cfg
    cell_spec = {k: v for k, v in ws.cell_spec(cell, synthetic).items() if k != "format"}
    settings = cell_spec["downstream"]
    # A trial replaces the tuned values: the task's own ones do not change its score.
    train = {k: v for k, v in settings["train"].items() if k not in tuned_keys(cfg)}
    cell_spec["downstream"] = {**settings, "train": train}
    search = {
        k: v for k, v in to_dict(cfg.sweep).items() if k.startswith("tune_") and k != "tune_trials"
    }
    return f"{cfg.name}-tune-{suffix}-{spec_hash({'cell': cell_spec, 'search': search})[:12]}"


def tune_cell(
    ws: Workspace,
    store: SweepStorage,
    cell: GridCell,
    parent_id: str | None,
    suffix: str | None = None,
) -> dict:
    """Run (or finish) the tuning study of ``cell``; returns its :func:`winners`."""
    sweep = ws.cfg.sweep
    synth_stage, synthetic = None, None
    if cell.uses_generator:  # before seeding, as for the cell stage; its key names the study
        synth_stage, synthetic = ws.synthetic_stage(cell.mode, cell.prompt, cell.real_fraction)
    name = study_name(ws, cell, suffix or cell.key(), synth_stage)
    with ws.lock(name):
        study = optuna.create_study(
            study_name=name,
            storage=store.storage,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=sweep.tune_seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=sweep.tune_startup_trials),
        )
        _fail_orphans(study, store)
        used = len(_counted(study))
        if used < sweep.tune_trials:
            objective = _Objective(ws, cell, name, parent_id, synthetic)
            # A diverging learning rate is a result (a bad trial), not a crash of the sweep.
            study.optimize(
                objective, n_trials=sweep.tune_trials - used, catch=(FloatingPointError,)
            )
        # The first tune_trials trials: a study run with a larger budget before answers a
        # smaller one as a study of that budget would.
        complete = [
            t for t in _counted(study)[: sweep.tune_trials] if t.state is TrialState.COMPLETE
        ]
        if not complete:
            raise RuntimeError(f"tuning study {name}: no trial completed")
        best = max(complete, key=lambda t: t.value)
    log.info("tuned %s: %s (val %.4f)", name, best.params, best.value)
    return winners(best.params, ws.cfg)


def winners(params: dict, cfg: Config) -> dict:
    """The training settings to freeze from a best trial's ``params``: those of
    :func:`tuned_keys` it holds (the task keeps its own for any other)."""
    return consistent({k: params[k] for k in tuned_keys(cfg) if k in params})


def consistent(values: dict) -> dict:
    """``values`` with ``nesterov`` off where they choose an optimizer other than SGD: the
    task's own settings may turn it on, and it is an SGD setting only."""
    if values.get("optimizer", "sgd") != "sgd":
        return {**values, "nesterov": False}
    return values


def _orphan(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get("orphaned"))


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished trials that count against the budget (not a dead tuner's), in order."""
    trials = study.get_trials(deepcopy=False, states=_FINISHED)
    return sorted((t for t in trials if not _orphan(t)), key=lambda t: t.number)


def _fail_orphans(study: optuna.Study, store: SweepStorage) -> None:
    """RUNNING trials of a study whose lock we hold belong to a dead tuner: close them."""
    study_id = store.storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = store.storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            store.storage.set_trial_user_attr(trial_id, "orphaned", True)
            store.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def suggest(trial: optuna.Trial, cfg: Config, task: GridTask | str) -> TrainConfig:
    """The trial's training settings: ``task``'s, with the tuned values suggested."""
    s = cfg.sweep
    values = {
        "lr": trial.suggest_float("lr", *s.tune_lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *s.tune_weight_decay, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(s.tune_batch_sizes)),
        "epochs": trial.suggest_int("epochs", *s.tune_epochs),
    }
    if s.tune_optimizers:
        values["optimizer"] = trial.suggest_categorical("optimizer", list(s.tune_optimizers))
    if s.tune_schedulers:
        values["scheduler"] = trial.suggest_categorical("scheduler", list(s.tune_schedulers))
    return dataclasses.replace(cfg.downstream.train_for(task), **consistent(values))


class _Objective:
    """One tuning trial: train the cell with suggested values, score on validation."""

    def __init__(
        self,
        ws: Workspace,
        cell: GridCell,
        name: str,
        parent_id: str | None,
        synthetic: EchoData | None,
    ) -> None:
        self.ws, self.cell, self.name, self.parent_id = ws, cell, name, parent_id
        self.synthetic = synthetic  # the cell's synthetic set, or None

    def __call__(self, trial: optuna.Trial) -> float:
        train_cfg = suggest(trial, self.ws.cfg, self.cell.task)
        tracker = self.ws.tracker
        tags = {
            "kind": "tuning",
            "study": self.name,
            "trial": trial.number,
            "tuned_cell": self.cell.key(),
            "task": self.cell.task.value,
        } | environment_tags(environment())
        task, model = build(self.ws, self.cell)
        run_id = tracker.start_run(f"{self.name}-{trial.number}", tags, self.parent_id)
        tracker.log_params(run_id, {k: getattr(train_cfg, k) for k in tuned_keys(self.ws.cfg)})
        curve: list[float] = []

        def on_epoch(epoch: int, score: float) -> None:
            curve.append(score)
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation {score:.4f}")

        def close(state: str, status: str = "FINISHED") -> None:
            tracker.log_curves(run_id, {f"val/{task.primary_metric}": curve})
            tracker.set_tag(run_id, "state", state)
            tracker.end_run(run_id, status)

        try:
            score = train_once(self.ws, self.cell, task, model, self.synthetic, train_cfg, on_epoch)
        except optuna.TrialPruned:
            close("pruned")
            raise
        except BaseException as exc:
            tracker.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
            close("failed", "FAILED")
            raise
        tracker.log_metrics(run_id, {"best_val": score})
        close("complete")
        return score


def build(ws: Workspace, cell: GridCell) -> tuple[Task, torch.nn.Module]:
    """The cell's task object and a fresh, seeded model, as the cell stage builds them."""
    seed_everything(cell.seed, resolve_device(ws.cfg.device))
    task, _ = build_task(
        cell.task,
        ws.cfg.downstream,
        cell.prompt.level if cell.prompt else None,
        ws.cfg.data.prompt_variant,
    )
    return task, build_model(cell.task, ws.cfg.downstream, ws.cfg.data.size)


def train_once(
    ws: Workspace,
    cell: GridCell,
    task: Task,
    model: torch.nn.Module,
    synthetic: EchoData | None,
    train_cfg: TrainConfig,
    on_epoch: Callable[[int, float], None],
) -> float:
    """Train ``cell``'s model once with ``train_cfg``; its best validation score.

    Built like the cell stage (sweeps/cell.py) but without a stage: nothing is tested or
    saved. ``mix`` trains through ``fit`` directly so every epoch reaches the pruner;
    ``pretrain`` and ``synthetic_only`` go through ``run_protocol``, which reports no
    epochs, so their trials are scored but never pruned.
    """
    device = resolve_device(ws.cfg.device)
    real_train = ws.real_train(cell.real_fraction)
    synth = None
    if synthetic is not None:
        synth = take_synthetic(synthetic, len(real_train), cell.ratio, cell.seed)
    val = ws.real.split("val")
    if cell.protocol is Protocol.MIX:
        has_synth = synth is not None and len(synth) > 0
        train = EchoData.concat([real_train, synth]) if has_synth else real_train
        result = fit(model, task, train, val, train_cfg, device, cell.seed, "tune", False, on_epoch)
        return result.best_score
    result = run_protocol(
        cell.protocol, model, task, real_train, synth, val, train_cfg, device, cell.seed, False
    )
    return result.final.best_score
