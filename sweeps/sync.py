"""Back-fill MLflow from a sweep's stage folders: ``python -m benchmark sync OUT``.

The stage folders are the durable results and MLflow is their index. When the index lacks
some of them (the tracking server was unreachable during the sweep, a worker died between
computing and logging, the store was moved or wiped), ``sync`` logs every finished
generator, fidelity measurement and cell that has no FINISHED run, under the sweep's parent
run, from the config each stage was made with: the runs are those the sweep would have
logged. It is idempotent (a second sync logs nothing) and safe beside running workers (the
same per-result locks as the sweep).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
from tqdm.auto import tqdm

from benchmark.config import Config, folder_config, load_config
from benchmark.grid import Mode, Prompt, parse_key
from benchmark.redact import mask_uri
from benchmark.stages import Stage
from benchmark.tracking import folder_tracking_uri
from sweeps.cell import log_cell
from sweeps.fidelity import log_fidelity
from sweeps.grid import parent_run
from sweeps.queue import CONFIG, CellQueue
from sweeps.storage import open_storage
from sweeps.workspace import SAMPLES_FILE, Workspace

KINDS = ("generator", "fidelity", "cell")


def _sweep_config(out: Path, tracking_uri: str | None) -> Config:
    cfg = folder_config(out)
    if cfg is None:
        raise FileNotFoundError(f"{out / 'config.yaml'}: not a sweep folder (no config.yaml)")
    uri = folder_tracking_uri(out, cfg.tracking.uri, tracking_uri)
    return dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, uri=uri))


def _stage_workspace(ws: Workspace, stage: Stage) -> Workspace:
    """``ws`` under the config the stage was made with (tuned values included)."""
    own = stage.path / "config.yaml"
    if not own.is_file():
        return ws
    cfg = load_config(own)
    # The tracking and storage settings are the sweep's, not what the stage recorded.
    return ws.with_config(dataclasses.replace(cfg, tracking=ws.cfg.tracking, sweep=ws.cfg.sweep))


def _prompt(value: str | None) -> Prompt | None:
    return Prompt(value) if value else None


def sync(out: Path, tracking_uri: str | None = None, progress: bool = True) -> dict[str, int]:
    """Log what the stage folders of ``out`` hold and MLflow lacks; counts logged per kind."""
    out = Path(out)
    ws = Workspace(_sweep_config(out, tracking_uri), out, progress=False)
    tracker = ws.tracker
    if tracker.offline:
        raise RuntimeError(
            f"MLflow at {mask_uri(tracker.uri)} is unreachable ({tracker.offline_reason}); "
            "nothing was synced"
        )
    with ws.lock("setup"):
        parent_id = parent_run(ws)
    store = ws.store
    gens, synths = store.finished("gen"), store.finished("synth")
    fidelity = [s for s in store.finished("fidelity") if "synthetic" in _spec(s)]
    cells = store.finished("cells")
    counts = dict.fromkeys(KINDS, 0)
    bar = tqdm(total=len(gens) + len(fidelity) + len(cells), desc="sync", disable=not progress)

    for stage in gens:
        spec = _spec(stage)
        counts["generator"] += _stage_workspace(ws, stage).log_generator(
            stage, Mode(spec["mode"]), _prompt(spec["prompt"]), spec["real_fraction"]
        )
        bar.update()

    swept = _swept_stages(ws)
    # The synthetic sets the last sweep's cells use (all, where the study cannot tell),
    # measured with its fidelity settings, are the ones shown; a later measurement of a
    # set supersedes an earlier one.
    swept_keys = set(swept.values())
    in_use = {_spec(s)["synthetic"] for s in cells if s.key in swept_keys}
    by_digest = {s.digest: _spec(s) for s in synths}
    synth_paths = {s.digest: s.path for s in synths}
    for stage in sorted(fidelity, key=lambda s: str(s.done.get("finished", ""))):
        synthetic = _spec(stage)["synthetic"]
        made_from = by_digest.get(synthetic)
        # made_from is None when its synthetic set was deleted: nothing to name it by.
        shown = (not swept or synthetic in in_use) and _measured_as_now(ws, stage)
        if made_from is not None and shown:
            stage_ws = _stage_workspace(ws, stage)
            with ws.lock(f"mlflow-{stage.key}"):
                if tracker.logged_run("fidelity", "stage", stage.key) is None:
                    counts["fidelity"] += 1
                    log_fidelity(
                        stage_ws,
                        stage,
                        Mode(made_from["mode"]),
                        _prompt(made_from["prompt"]),
                        made_from["real_fraction"],
                        synth_paths[synthetic] / SAMPLES_FILE,
                    )
        bar.update()

    for stage in cells:
        cell = parse_key(json.loads((stage.path / "metrics.json").read_text())["cell_key"])
        with ws.lock(f"mlflow-{cell.key()}"):
            # A folder swept with several settings holds several stages of a cell.
            if cell.key() in swept:  # the one the last sweep settled on, unless shown
                missing = swept[cell.key()] == stage.key and (
                    tracker.logged_run("cell", "stage", stage.key) is None
                )
            else:  # unknown to the study: any one of them, if none is shown
                missing = tracker.logged_run("cell", "cell_key", cell.key()) is None
            if missing:
                counts["cell"] += 1
                log_cell(_stage_workspace(ws, stage), cell, stage, parent_id)
        bar.update()
    bar.close()
    if tracker.offline:  # lost midway: what was logged stays, the rest waits for the next sync
        raise RuntimeError(
            f"MLflow at {mask_uri(tracker.uri)} became unreachable during sync "
            f"({tracker.offline_reason}); run sync again"
        )
    tracker.end_run(parent_id, "FINISHED")
    return counts


def _swept_stages(ws: Workspace) -> dict[str, str]:
    """``{cell key: stage key}`` of the cells the last sweep of ``ws`` completed, from its
    Optuna study ({} when the study cannot be opened or predates the record)."""
    if ws.cfg.sweep.storage is None and not (ws.out / "optuna.db").is_file():
        return {}  # opening would create an empty one
    try:
        store = open_storage(ws.cfg.sweep.storage, ws.out, ws.cfg.sweep)
        study = optuna.load_study(study_name=ws.cfg.name, storage=store.storage)
    except (KeyError, ValueError, RuntimeError, OSError):
        return {}
    queue = CellQueue(study, store, study.user_attrs.get(CONFIG, ""))
    done = queue.last_complete().items()
    return {key: t.user_attrs["stage"] for key, t in done if t.user_attrs.get("stage")}


def _measured_as_now(ws: Workspace, stage: Stage) -> bool:
    """Whether a fidelity stage was made with the sweep's fidelity settings (stages
    without their config are taken as such)."""
    own = stage.path / "config.yaml"
    return not own.is_file() or load_config(own).fidelity == ws.cfg.fidelity


def _spec(stage: Stage) -> dict:
    return json.loads((stage.path / "spec.json").read_text())["spec"]
