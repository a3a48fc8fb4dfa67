"""One grid cell: its stage (train, test, save) and its MLflow run (logged from the stage).

Computing and logging are separate steps: the cell folder is the durable result, and the
MLflow run is written from it, so a crash between the two is repaired by logging again
(``log_cell`` is idempotent per cell key).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from benchmark.checkpoints import save_state
from benchmark.config import to_dict
from benchmark.data.assembly import take_synthetic
from benchmark.data.records import EchoData
from benchmark.downstream_config import DownstreamConfig
from benchmark.environment import provenance_tags
from benchmark.grid import GridCell
from benchmark.metrics import convergence
from benchmark.runtime import resolve_device, seed_everything
from benchmark.stages import Stage
from benchmark.tracking import CELL_RUN_METRICS, SETTINGS_PARAM
from downstream.protocols import ProtocolResult, run_protocol, run_protocol_together
from downstream.registry import build_model, build_task
from downstream.training import Task
from sweeps.fidelity import fidelity_stage
from sweeps.tuning import tuned_keys
from sweeps.workspace import Workspace

# The clinical indices per test patient, predicted and reference (seg with pixel spacing).
PER_PATIENT = "per_patient.csv"


@dataclass
class _Training:
    """What one cell trains: its data, task and fresh model (seeded by the cell)."""

    cell: GridCell
    real_train: EchoData
    synth: EchoData | None
    task: Task
    model_name: str
    model: torch.nn.Module


def _inputs(ws: Workspace, cell: GridCell) -> tuple[Stage | None, EchoData | None]:
    """The cell's synthetic stage and images (and their fidelity stage), if it uses any."""
    if not cell.uses_generator:
        return None, None
    synth_stage, synthetic = ws.synthetic_stage(cell.mode, cell.prompt, cell.real_fraction)
    if ws.cfg.fidelity.enabled:
        fidelity_stage(ws, cell.mode, cell.prompt, cell.real_fraction)
    return synth_stage, synthetic


def _training(ws: Workspace, cell: GridCell, synthetic: EchoData | None) -> _Training:
    seed_everything(cell.seed, resolve_device(ws.cfg.device))
    real_train = ws.real_train(cell.real_fraction)
    synth = None
    if synthetic is not None:
        # synthetic_only and pretrain use ratio 1 after canonicalisation.
        synth = take_synthetic(synthetic, len(real_train), cell.ratio, cell.seed)
    task, model_name = build_task(
        cell.task,
        ws.cfg.downstream,
        cell.prompt.level if cell.prompt else None,
        ws.cfg.data.prompt_variant,
    )
    model = build_model(cell.task, ws.cfg.downstream, ws.cfg.data.size)
    return _Training(cell, real_train, synth, task, model_name, model)


def _write(
    tmp: Path, ws: Workspace, run: _Training, result: ProtocolResult, started: float, **extra
) -> dict:
    """Test the trained model on the real test split and write the cell's files."""
    device = resolve_device(ws.cfg.device)
    task, train_cfg = run.task, ws.cfg.downstream.train_for(run.cell.task)
    final = result.final
    tested = task.evaluate(final.model, ws.real.split("test"), device)
    metrics = tested.metrics
    conv = convergence(final.val_score, final.epoch_seconds, train_cfg.epochs)
    curves = {
        "train/loss": final.train_loss,
        "train/lr": final.lr,
        f"val/{task.primary_metric}": final.val_score,
    }
    if result.pretrain is not None:
        curves["pretrain/train/loss"] = result.pretrain.train_loss
        curves["pretrain/train/lr"] = result.pretrain.lr
        curves[f"pretrain/val/{task.primary_metric}"] = result.pretrain.val_score
    summary = {
        "cell_key": run.cell.key(),
        "model": run.model_name,
        "primary_metric": task.primary_metric,
        "test": metrics,
        **conv,
        "best_epoch": final.best_epoch,
        "epochs_run": len(final.val_score),
        "optimiser_steps": final.steps,
        "n_real_train": len(run.real_train),
        "n_synthetic": 0 if run.synth is None else len(run.synth),
        "train_seconds": round(time.time() - started, 3),
        **extra,
    }
    (tmp / "metrics.json").write_text(json.dumps(summary, indent=2))
    (tmp / "curves.json").write_text(json.dumps(curves))
    tested.per_sample.to_csv(tmp / "per_sample.csv", index=False)
    if tested.per_patient is not None:
        tested.per_patient.to_csv(tmp / PER_PATIENT, index=False)
    save_state(final.model, tmp / "model.safetensors")
    return {"primary": metrics[task.primary_metric]}


def cell_stage(ws: Workspace, cell: GridCell) -> Stage:
    """Compute (or reuse) the cell's folder: metrics.json, curves.json, per_sample.csv,
    per_patient.csv (seg, with pixel spacing), model.safetensors and the resolved config."""
    synth_stage, synthetic = _inputs(ws, cell)

    def compute(tmp: Path) -> dict:
        started = time.time()
        run = _training(ws, cell, synthetic)
        result = run_protocol(
            cell.protocol,
            run.model,
            run.task,
            run.real_train,
            run.synth,
            ws.real.split("val"),
            ws.cfg.downstream.train_for(cell.task),
            resolve_device(ws.cfg.device),
            cell.seed,
            ws.progress,
        )
        return _write(tmp, ws, run, result, started)

    return ws.store.get_or_compute(
        "cells",
        ws.cell_spec(cell, synth_stage),
        compute,
        label=cell.key(),
        resolved_config=ws.resolved,
    )


def ensemble_group(downstream: DownstreamConfig) -> Callable[[GridCell], GridCell]:
    """What the cells of one ensemble share: all but the seed, and, where the cell's task
    trains on a step budget (``steps_per_epoch`` of ``downstream.train_for(task)``), all but
    the seed and the ratio. Under a budget every member takes the same steps of full batches
    whatever its set's size, and the ratios of a mode draw from one synthetic set."""

    def group(cell: GridCell) -> GridCell:
        if downstream.train_for(cell.task).steps_per_epoch:
            return replace(cell, seed=0, ratio=0.0)
        return replace(cell, seed=0)

    return group


def cell_stages_together(ws: Workspace, cells: list[GridCell]) -> dict[str, Stage]:
    """The stages of ``cells`` (the seeds of one cell, or under a step budget its seeds and
    ratios: :func:`ensemble_group`), the missing ones trained together as one batched
    ensemble (``sweep.ensemble``); keyed by cell key.

    Each member's folder is the one :func:`cell_stage` would write, up to float rounding;
    its ``done.json`` seconds are its share of the shared training plus its own testing, so
    the stages' seconds still add up to the time spent. Raises if the ensemble cannot train
    them (the caller then runs them one at a time, each failing on its own).
    """
    if len(set(map(ensemble_group(ws.cfg.downstream), cells))) != 1:
        raise ValueError(
            "an ensemble of cells holds the seeds of one cell (and its ratios under a step "
            f"budget), not {sorted(c.key() for c in cells)}"
        )
    # The members share one synthetic set (the ratios take subsets of it): loaded once.
    synth_stage, synthetic = _inputs(ws, cells[0])
    stages: dict[str, Stage] = {}
    missing: list[GridCell] = []
    for cell in cells:
        found = ws.store.lookup("cells", ws.cell_spec(cell, synth_stage), cell.key())
        if found is not None:
            stages[cell.key()] = found
        else:
            missing.append(cell)
    if len(missing) < 2:
        for cell in missing:
            stages[cell.key()] = cell_stage(ws, cell)
        return stages
    started = time.time()
    runs = [_training(ws, cell, synthetic) for cell in missing]
    results = run_protocol_together(
        cells[0].protocol,
        [r.model for r in runs],
        runs[0].task,
        [r.real_train for r in runs],
        [r.synth for r in runs],
        ws.real.split("val"),
        ws.cfg.downstream.train_for(cells[0].task),
        resolve_device(ws.cfg.device),
        [r.cell.seed for r in runs],
        ws.progress,
    )
    share = (time.time() - started) / len(runs)
    for run, result, cell in zip(runs, results, missing):
        stages[cell.key()] = ws.store.get_or_compute(
            "cells",
            ws.cell_spec(cell, synth_stage),
            lambda tmp, run=run, result=result: _write(
                tmp, ws, run, result, started, ensemble=len(runs)
            ),
            label=cell.key(),
            resolved_config=ws.resolved,
            extra_seconds=share,
        )
    return stages


def cell_tags(cell: GridCell) -> dict[str, str]:
    return {
        "kind": "cell",
        "cell_key": cell.key(),
        "task": cell.task.value,
        "mode": cell.mode.value,
        "prompt": cell.prompt.value if cell.prompt else "-",
        "ratio": str(cell.ratio),
        "protocol": cell.protocol.value,
        "real_fraction": str(cell.real_fraction),
        "seed": str(cell.seed),
    }


def log_cell(ws: Workspace, cell: GridCell, stage: Stage, parent_id: str | None) -> str | None:
    """Log the cell's MLflow run from its stage folder unless a FINISHED run of this stage
    exists; its id (None while the tracking store is unreachable: the stage folder keeps
    the result). Runs of the cell from other stages (a sweep of other settings into the
    same folder) are superseded: the report shows the result of the settings swept last."""
    tracker = ws.tracker
    run_id = tracker.logged_run("cell", "stage", stage.key) or _log_cell_run(
        ws, cell, stage, parent_id
    )
    if run_id is not None:  # also when found: one killed before superseding left two
        tracker.supersede("cell", {"cell_key": cell.key()}, keep=run_id)
    return run_id


def logged_settings(ws: Workspace, cell: GridCell) -> dict:
    """``ws.cell_settings(cell)``, where each cell tunes its own training
    (``sweep.tune_scope: cell``) with the search in place of the cell's winners: the cells of
    one table were tuned alike, and each found its own values by design."""
    settings = ws.cell_settings(cell)
    sweep = ws.cfg.sweep
    if sweep.tune and sweep.tune_scope == "cell":
        train = settings["downstream"][cell.task.value]["train"]
        for key in tuned_keys(ws.cfg):
            train.pop(key, None)
        settings["sweep"] = {k: v for k, v in to_dict(sweep).items() if k.startswith("tune")}
    return settings


def _log_cell_run(ws: Workspace, cell: GridCell, stage: Stage, parent_id: str | None) -> str | None:
    tracker = ws.tracker
    summary = json.loads((stage.path / "metrics.json").read_text())
    tags = cell_tags(cell) | {
        "model": summary["model"],
        "primary_metric": summary["primary_metric"],
        "status": "ok",
        "stage": stage.key,
    }
    tags |= provenance_tags(stage.done)  # the install and threads that computed it
    run_id = tracker.start_run(cell.key(), tags, parent_id)
    params = {k: v for k, v in to_dict(ws.cfg).items() if k in ("data", "downstream")}
    # What this cell trained with (downstream.train under its task's own values): one name
    # for every task, to compare and filter cells by in the MLflow UI.
    params["train"] = to_dict(ws.cfg.downstream.train_for(cell.task))
    if cell.uses_generator:
        params["generator"] = to_dict(ws.cfg.generator)
    # What decided its result, under one prefix: a report compares these across a table.
    params[SETTINGS_PARAM] = logged_settings(ws, cell)
    tracker.log_params(run_id, params)
    curves = json.loads((stage.path / "curves.json").read_text())
    tracker.log_curves(run_id, curves)
    final = {f"test/{k}": v for k, v in summary["test"].items()}
    for name in CELL_RUN_METRICS:
        if summary.get(name) is not None:
            final[name] = summary[name]
    tracker.log_metrics(run_id, final)
    for name in ("per_sample.csv", PER_PATIENT, "config.yaml", "curves.json"):
        if name != PER_PATIENT or (stage.path / name).is_file():
            tracker.log_artifact(run_id, stage.path / name)
    tracker.end_run(run_id)
    return run_id
