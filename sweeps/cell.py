"""One grid cell: its stage (train, test, save) and its MLflow run (logged from the stage).

Computing and logging are separate steps: the cell folder is the durable result, and the
MLflow run is written from it, so a crash between the two is repaired by logging again
(``log_cell`` is idempotent per cell key).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from safetensors.torch import save_file

from benchmark.config import to_dict
from benchmark.data.assembly import take_synthetic
from benchmark.grid import GridCell
from benchmark.metrics import convergence
from benchmark.runtime import resolve_device, seed_everything
from benchmark.stages import Stage
from downstream.protocols import run_protocol
from downstream.registry import build_model, build_task
from sweeps.fidelity import fidelity_stage
from sweeps.workspace import Workspace


def cell_stage(ws: Workspace, cell: GridCell) -> Stage:
    """Compute (or reuse) the cell's folder: metrics.json, curves.json, per_sample.csv,
    model.safetensors and the resolved config."""
    synth_stage, synthetic = None, None
    if cell.uses_generator:
        synth_stage, synthetic = ws.synthetic_stage(cell.mode, cell.prompt, cell.real_fraction)
        if ws.cfg.fidelity.enabled:
            fidelity_stage(ws, cell.mode, cell.prompt, cell.real_fraction)

    def compute(tmp: Path) -> dict:
        started = time.time()
        device = resolve_device(ws.cfg.device)
        seed_everything(cell.seed, device)
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
        train_cfg = ws.cfg.downstream.train
        result = run_protocol(
            cell.protocol,
            model,
            task,
            real_train,
            synth,
            ws.real.split("val"),
            train_cfg,
            device,
            cell.seed,
            ws.progress,
        )
        final = result.final
        metrics, per_sample = task.evaluate(final.model, ws.real.split("test"), device)
        conv = convergence(final.val_score, final.epoch_seconds, train_cfg.epochs)
        curves = {"train/loss": final.train_loss, f"val/{task.primary_metric}": final.val_score}
        if result.pretrain is not None:
            curves["pretrain/train/loss"] = result.pretrain.train_loss
            curves[f"pretrain/val/{task.primary_metric}"] = result.pretrain.val_score
        summary = {
            "cell_key": cell.key(),
            "model": model_name,
            "primary_metric": task.primary_metric,
            "test": metrics,
            **conv,
            "best_epoch": final.best_epoch,
            "epochs_run": len(final.val_score),
            "n_real_train": len(real_train),
            "n_synthetic": 0 if synth is None else len(synth),
            "train_seconds": round(time.time() - started, 3),
        }
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2))
        (tmp / "curves.json").write_text(json.dumps(curves))
        per_sample.to_csv(tmp / "per_sample.csv", index=False)
        save_file(
            {k: v.contiguous().cpu() for k, v in final.model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        return {"primary": metrics[task.primary_metric]}

    return ws.store.get_or_compute(
        "cells",
        ws.cell_spec(cell, synth_stage),
        compute,
        label=cell.key(),
        resolved_config=ws.resolved,
    )


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
    """Log the cell's MLflow run from its stage folder unless a FINISHED one exists; its id
    (None while the tracking store is unreachable: the stage folder keeps the result)."""
    tracker = ws.tracker
    existing = tracker.logged_run("cell", "cell_key", cell.key())
    if existing is not None:
        return existing
    summary = json.loads((stage.path / "metrics.json").read_text())
    tags = cell_tags(cell) | {
        "model": summary["model"],
        "primary_metric": summary["primary_metric"],
        "status": "ok",
        "stage": stage.key,
    }
    run_id = tracker.start_run(cell.key(), tags, parent_id)
    params = {k: v for k, v in to_dict(ws.cfg).items() if k in ("data", "downstream")}
    if cell.uses_generator:
        params["generator"] = to_dict(ws.cfg.generator)
    tracker.log_params(run_id, params)
    curves = json.loads((stage.path / "curves.json").read_text())
    tracker.log_curves(run_id, curves)
    final = {f"test/{k}": v for k, v in summary["test"].items()}
    for name in ("epochs_to_95", "seconds_to_95", "val_auc", "train_seconds", "best_epoch"):
        if summary.get(name) is not None:
            final[name] = summary[name]
    tracker.log_metrics(run_id, final)
    for name in ("per_sample.csv", "config.yaml", "curves.json"):
        tracker.log_artifact(run_id, stage.path / name)
    tracker.end_run(run_id)
    return run_id
