"""The grid as an Optuna study: each trial is one canonical cell, the study is the queue.

Missing cells are enqueued as WAITING trials carrying the cell key as a user attribute;
a worker pops a trial with ``study.ask()``, runs the cell (stages are reused when done),
logs it to MLflow and tells the study the cell's primary metric. A rerun enqueues only
cells without a COMPLETE trial, so a finished sweep recomputes nothing.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from tqdm.auto import tqdm

from benchmark.config import Config, to_dict
from benchmark.data.sources import check_source
from benchmark.grid import GridCell, Mode, expand, parse_key
from benchmark.redact import mask_uri
from downstream.registry import IMPLEMENTED as IMPLEMENTED_TASKS
from generators.registry import IMPLEMENTED as IMPLEMENTED_MODES
from sweeps.cell import cell_stage, cell_tags, log_cell
from sweeps.workspace import Workspace

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def grid_cells(cfg: Config) -> list[GridCell]:
    g = cfg.grid
    return expand(
        g.tasks,
        g.modes,
        g.prompts,
        g.ratios,
        g.protocols,
        g.real_fractions,
        g.seeds,
        include_baseline=g.include_baseline,
    )


def check_runnable(cfg: Config, cells: list[GridCell]) -> None:
    """Fail before any work if a cell needs something this build or config cannot do."""
    modes = {c.mode for c in cells if c.mode is not Mode.NONE}
    missing = sorted(m.value for m in modes if m not in IMPLEMENTED_MODES)
    if missing:
        raise ValueError(
            f"grid.modes {missing} are not available yet "
            f"(implemented: {[m.value for m in IMPLEMENTED_MODES]})"
        )
    tasks = sorted(t.value for t in {c.task for c in cells} if t not in IMPLEMENTED_TASKS)
    if tasks:
        raise ValueError(
            f"grid.tasks {tasks} are not available yet "
            f"(implemented: {[t.value for t in IMPLEMENTED_TASKS]})"
        )
    if Mode.ORACLE in modes and cfg.data.source != "phantom":
        raise ValueError(
            "grid.modes 'oracle' needs data.source 'phantom' (it samples the simulator)"
        )
    check_source(cfg.data)  # a missing data root fails here, not after an hour of work


def default_storage(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'optuna.db'}"


@dataclass
class SweepResult:
    cells: list[GridCell]
    computed: list[str] = field(default_factory=list)  # cell keys trained by this call
    failed: dict[str, str] = field(default_factory=dict)  # cell key -> reason
    parent_run_id: str | None = None


def _queue(study: optuna.Study, cells: list[GridCell]) -> int:
    """Enqueue every cell that has neither a COMPLETE nor a WAITING/RUNNING trial."""
    states = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("cell_key")
        if key is not None and states.get(key) != optuna.trial.TrialState.COMPLETE:
            states[key] = t.state
    busy = {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.WAITING,
        optuna.trial.TrialState.RUNNING,
    }
    todo = [c for c in cells if states.get(c.key()) not in busy]
    for cell in todo:
        study.enqueue_trial({}, user_attrs={"cell_key": cell.key()})
    return len(todo)


def _parent_run(ws: Workspace) -> str:
    """The sweep's parent run, reused across invocations of the same sweep."""
    tracker = ws.tracker
    runs = tracker.find_runs(f"tags.kind = 'sweep' and tags.sweep = '{ws.cfg.name}'")
    if runs:
        run_id = runs[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")
        return run_id
    run_id = tracker.start_run(ws.cfg.name, {"kind": "sweep", "sweep": ws.cfg.name})
    tracker.log_params(run_id, to_dict(ws.cfg) | {"out": str(ws.out)})
    tracker.log_text(run_id, ws.resolved, "config.yaml")
    return run_id


def run_sweep(cfg: Config, out: Path, progress: bool = True) -> SweepResult:
    """Run (or resume) every canonical cell of the grid; see the module docstring."""
    cells = grid_cells(cfg)
    check_runnable(cfg, cells)
    ws = Workspace(cfg, out, progress)
    ws.out.mkdir(parents=True, exist_ok=True)
    (ws.out / "config.yaml").write_text(ws.resolved)
    storage = cfg.sweep.storage or default_storage(ws.out)
    study = optuna.create_study(
        study_name=cfg.name, storage=storage, direction="maximize", load_if_exists=True
    )
    log.info("study %s in %s", cfg.name, mask_uri(storage))
    result = SweepResult(cells=cells, parent_run_id=_parent_run(ws))
    ws.data_stage  # noqa: B018 - build the dataset before the progress bar starts

    todo = _queue(study, cells)
    bar = tqdm(total=todo, desc="cells", disable=not progress, unit="cell")
    while any(t.state == optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        trial = study.ask()
        key = trial.user_attrs.get("cell_key")
        if key is None:  # the queue emptied under us: do not leave a stray trial
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        cell = parse_key(key)
        bar.set_postfix_str(key)
        try:
            stage = cell_stage(ws, cell)
            run_id = log_cell(ws, cell, stage, result.parent_run_id)
        except Exception as exc:  # one broken cell must not stop the sweep
            reason = f"{type(exc).__name__}: {exc}"
            result.failed[key] = reason
            _log_failure(ws, cell, reason, result.parent_run_id)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.debug("cell %s failed:\n%s", key, traceback.format_exc())
        else:
            trial.set_user_attr("mlflow_run_id", run_id)
            trial.set_user_attr("stage", stage.key)
            if stage.computed:
                result.computed.append(key)
            study.tell(trial, stage.done["summary"]["primary"])
        bar.update(1)
    bar.close()
    _backfill(ws, cells, result)
    ws.tracker.end_run(result.parent_run_id, "FAILED" if result.failed else "FINISHED")
    return result


def _log_failure(ws: Workspace, cell: GridCell, reason: str, parent_id: str | None) -> None:
    tracker = ws.tracker
    run_id = tracker.start_run(cell.key(), cell_tags(cell) | {"status": "failed"}, parent_id)
    tracker.client.set_tag(run_id, "error", reason[:5000])
    tracker.end_run(run_id, "FAILED")


def _backfill(ws: Workspace, cells: list[GridCell], result: SweepResult) -> None:
    """Log cells whose stage is finished but whose MLflow run is missing (a crash between
    computing and logging, or a deleted tracking store). Their stages are reused."""
    logged = ws.tracker.finished_runs("cell", "cell_key")
    for cell in cells:
        if cell.key() not in logged and cell.key() not in result.failed:
            log_cell(ws, cell, cell_stage(ws, cell), result.parent_run_id)
