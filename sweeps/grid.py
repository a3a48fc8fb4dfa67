"""The grid as an Optuna study: each trial is one canonical cell, the study is the queue.

``run_sweep`` opens the storage, the sweep's parent MLflow run and the study, optionally
tunes the nuisance hyperparameters (``sweeps.tuning``), enqueues every cell without a
COMPLETE trial (user attribute ``cell_key``) and works the queue, in this process or in
``sweep.workers`` local processes; other machines running the same command with the same
``--storage`` and output folder join in. A worker claims a cell (``sweeps.queue``), runs it
(stages are reused when done, file-locked when not), logs it to MLflow and tells the study
the cell's primary metric (user attribute ``mlflow_run_id``). Every worker returns when no
cell of the grid is waiting or running, so a rerun recomputes nothing that is done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from tqdm.auto import tqdm

from benchmark import faults
from benchmark.config import Config, to_dict
from benchmark.data.sources import check_source
from benchmark.environment import environment, environment_tags
from benchmark.grid import TRAINED_MODES, GridCell, Mode, Task, parse_key
from benchmark.inception import check_available as check_inception
from benchmark.redact import mask_config, mask_uri
from benchmark.stages import Stage
from benchmark.tracking import flatten
from downstream.registry import IMPLEMENTED as IMPLEMENTED_TASKS
from generators.registry import IMPLEMENTED as IMPLEMENTED_MODES
from generators.registry import get_generator
from sweeps.cell import cell_stage, cell_stages_together, cell_tags, ensemble_group, log_cell
from sweeps.plan import generator_prompt, grid_cells
from sweeps.queue import CELL_KEY, CONFIG, CellQueue
from sweeps.storage import SweepStorage, check_urls, default_storage_url, open_storage
from sweeps.tuning import tune_cell, tune_reference, with_train
from sweeps.workers import helper_processes, interrupt, parent_alive, threads_per_worker
from sweeps.workspace import Workspace

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def work_order(cfg: Config, cells: list[GridCell]) -> list[GridCell]:
    """The order cells are queued in: one cell of each generator in turn, the generators
    that must be trained first, then the controls and the real-only cells.

    Workers claim cells in queue order, and a cell waits for its generator under a lock; in
    key order, two workers would both take cells of the first generator and one would
    wait for the other to train it. In turns, the first claims train different generators.
    """
    groups: dict[tuple, list[GridCell]] = {}
    for cell in cells:
        prompt = str(generator_prompt(cfg, cell.mode, cell.prompt))
        key = (cell.mode not in TRAINED_MODES, cell.mode, prompt, cell.real_fraction)
        groups.setdefault(key, []).append(cell)
    queues = [sorted(groups[g], key=lambda c: c.key()) for g in sorted(groups)]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


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
    # Each generator knows what it needs and which labels its images carry (a cls cell
    # needs its target on the synthetic images it trains on).
    target = cfg.downstream.cls.target
    for mode in sorted(modes, key=lambda m: m.value):
        cls = any(c.task is Task.CLS and c.mode is mode for c in cells)
        get_generator(mode, cfg.device).check(cfg.data, cfg.generator, target if cls else None)
    check_source(cfg.data)  # a missing data root fails here, not after an hour of work
    if cfg.fidelity.enabled and cfg.fidelity.inception_weights and modes:
        check_inception(cfg.fidelity.inception_weights)  # so do FID weights and their extra
    check_urls(cfg.sweep.storage, cfg.tracking.uri)  # so does a URL that cannot work


def default_storage(out: Path) -> str:
    return default_storage_url(out)


@dataclass
class SweepResult:
    cells: list[GridCell]
    computed: list[str] = field(default_factory=list)  # cell keys trained while this ran
    failed: dict[str, str] = field(default_factory=dict)  # cell key -> reason
    parent_run_id: str | None = None
    # Why MLflow could not be reached (the results are in the stage folders), or None.
    tracking_offline: str | None = None


def parent_run(ws: Workspace) -> str | None:
    """The sweep's parent run, reused across invocations (and workers) of the same sweep;
    None when the tracking store is offline. Callers hold ``ws.lock("setup")``."""
    tracker = ws.tracker
    # Params are the config as given (tuned values go to config.yaml); URLs masked.
    params = flatten(to_dict(mask_config(ws.cfg)) | {"out": str(ws.out)})
    runs = tracker.find_runs(f"tags.kind = 'sweep' and tags.sweep = '{ws.cfg.name}'")
    if runs:
        run = min(runs, key=lambda r: r.info.start_time)
        run_id = run.info.run_id
        tracker.set_status(run_id, "RUNNING")
        # Only what a process killed while logging them left out: a param, once logged,
        # keeps its first value (a later invocation may have extended the grid).
        params = {k: v for k, v in params.items() if k not in run.data.params}
    else:
        run_id = tracker.start_run(ws.cfg.name, {"kind": "sweep", "sweep": ws.cfg.name})
    tracker.log_params(run_id, params)
    return run_id


def _open_study(cfg: Config, store: SweepStorage) -> optuna.Study:
    return optuna.create_study(
        study_name=cfg.name, storage=store.storage, direction="maximize", load_if_exists=True
    )


def run_sweep(cfg: Config, out: Path, progress: bool = True) -> SweepResult:
    """Run (or resume, or join) every canonical cell of the grid; see the module docstring."""
    cells = grid_cells(cfg)
    check_runnable(cfg, cells)
    started = time.time()
    ws = Workspace(cfg, out, progress)
    ws.out.mkdir(parents=True, exist_ok=True)
    # Workers starting together would race to create the tables of an empty database,
    # the parent run and the queue entries; one at a time they find each other's.
    with ws.lock("setup"):
        store = open_storage(cfg.sweep.storage, ws.out, cfg.sweep)
        study = _open_study(cfg, store)
        parent_id = parent_run(ws)
    log.info("study %s in %s", cfg.name, store.masked)
    # Of the config as given (builds the dataset once, before any worker needs it): tuned
    # values follow from it, and every worker and machine must compute the same.
    config_id = ws.results_config
    study.set_user_attr(CONFIG, config_id)  # the settings swept last (sync reads it)
    if cfg.sweep.tune and cfg.sweep.tune_scope == "reference":
        ws = ws.with_config(tune_reference(ws, store, cells, parent_id))
    _write_atomic(ws.out / "config.yaml", ws.resolved)
    ws.tracker.log_text(parent_id, ws.resolved, "config.yaml")
    queue = CellQueue(study, store, config_id)
    keys = [c.key() for c in work_order(cfg, cells)]
    with ws.lock("setup"):
        queue.requeue_stale()
        queue.enqueue_missing(keys)

    n_workers = cfg.sweep.workers
    bar = tqdm(total=len(keys), desc="cells", disable=not progress, unit="cell")
    helpers = (ws.cfg, ws.out, parent_id, threads_per_worker(n_workers), config_id)
    with helper_processes(run_worker, helpers, n_workers - 1):
        if n_workers > 1:  # the helpers take the other cores
            torch.set_num_threads(threads_per_worker(n_workers))
        # Returns when no cell is waiting or running anywhere, so it also waits for the
        # helpers (and other machines), and takes over the cell of one that dies.
        work(ws, queue, keys, parent_id, bar)
    bar.close()
    _backfill(ws, queue, cells, parent_id)
    result = SweepResult(
        cells=cells,
        computed=queue.computed_since(keys, started),
        failed=queue.failed(keys),
        parent_run_id=parent_id,
        tracking_offline=ws.tracker.offline_reason,
    )
    ws.tracker.end_run(parent_id, "FAILED" if result.failed else "FINISHED")
    return result


def run_worker(
    cfg: Config, out: Path, parent_id: str, threads: int, config_id: str, parent: int, index: int
) -> None:
    """Entry point of one helper worker process (``sweeps.workers``). SIGTERM (the parent's
    ``terminate``) fails its cell at once, as Ctrl-C does."""
    signal.signal(signal.SIGTERM, interrupt)
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ws = Workspace(cfg, out, progress=False)
    store = open_storage(cfg.sweep.storage, ws.out, cfg.sweep)
    study = optuna.load_study(study_name=cfg.name, storage=store.storage)
    queue = CellQueue(study, store, config_id)
    with contextlib.suppress(KeyboardInterrupt):
        work(ws, queue, [c.key() for c in grid_cells(cfg)], parent_id, go_on=parent_alive(parent))


def work(
    ws: Workspace,
    queue: CellQueue,
    keys: list[str],
    parent_id: str | None,
    bar: tqdm | None = None,
    go_on: Callable[[], bool] = lambda: True,
) -> None:
    """Claim and run cells until no cell of ``keys`` is waiting or running anywhere, or
    until ``go_on()`` is false (a helper whose sweep was killed)."""
    poll = max(1, min(ws.cfg.sweep.heartbeat_interval, 5))
    while go_on():
        queue.requeue_stale()
        if bar is not None:
            bar.n = len(queue.complete(keys))
            bar.refresh()
        trial = queue.claim(keys)
        if trial is not None:
            faults.point("trial.claimed")
            key = trial.user_attrs[CELL_KEY]
            if bar is not None:
                bar.set_postfix_str(key)
            group = [(trial, key), *_claim_siblings(ws, queue, key, keys)]
            if len(group) > 1:
                _run_together(ws, queue, group, parent_id)
            else:
                _run_trial(ws, queue, trial, key, parent_id)
            continue
        waiting, running = queue.pending(keys)
        if not waiting and not running:
            return
        if bar is not None and running:
            bar.set_postfix_str(f"{running} running elsewhere")
        # A cell running elsewhere comes back to the queue if its worker dies.
        time.sleep(0 if waiting else poll)


def _claim_siblings(
    ws: Workspace, queue: CellQueue, key: str, keys: list[str]
) -> list[tuple[optuna.trial.Trial, str]]:
    """Up to ``sweep.ensemble - 1`` waiting cells that differ from ``key`` in the seed only
    (or, with a step budget, in the seed and the ratio: :func:`ensemble_group`), claimed to
    train with it; none with per-cell tuning, where each cell has its own settings."""
    sweep = ws.cfg.sweep
    if sweep.ensemble < 2 or (sweep.tune and sweep.tune_scope == "cell"):
        return []
    group = ensemble_group(ws.cfg.downstream)
    own = group(parse_key(key))
    siblings = {k for k in keys if k != key and group(parse_key(k)) == own}
    claimed: list[tuple[optuna.trial.Trial, str]] = []
    while siblings and len(claimed) < sweep.ensemble - 1:
        trial = queue.claim(siblings)
        if trial is None:
            break
        claimed.append((trial, trial.user_attrs[CELL_KEY]))
        siblings.discard(claimed[-1][1])
    return claimed


def _run_together(
    ws: Workspace,
    queue: CellQueue,
    group: list[tuple[optuna.trial.Trial, str]],
    parent_id: str | None,
) -> None:
    """Train the claimed cells (:func:`_claim_siblings`) as one ensemble, then finish each
    trial as :func:`_run_trial` does. If the ensemble fails, each cell runs alone, so that a
    broken cell fails on its own and its siblings still finish."""
    stages: dict[str, Stage] = {}
    with contextlib.ExitStack() as beats:
        for trial, _ in group:
            beats.enter_context(queue.heartbeat(trial))
        try:
            try:
                stages = cell_stages_together(ws, [parse_key(key) for _, key in group])
            except Exception as exc:
                keys = [k for _, k in group]
                log.info("ensemble of %s failed (%s); running them one at a time", keys, exc)
            for trial, key in group:
                _run_trial(ws, queue, trial, key, parent_id, stages.get(key))
        except KeyboardInterrupt:  # every claimed cell fails now, not after the grace period
            for trial, _ in group:
                _fail_interrupted(queue, trial)
            raise


def _fail_interrupted(queue: CellQueue, trial: optuna.trial.Trial) -> None:
    # Failed now rather than stale after the grace period, so that a rerun started right
    # away enqueues the cell again instead of waiting for it.
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr("error", "interrupted")
        queue.study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _run_trial(
    ws: Workspace,
    queue: CellQueue,
    trial: optuna.trial.Trial,
    key: str,
    parent_id: str | None,
    stage: Stage | None = None,
) -> None:
    """Compute (or reuse) the cell of ``trial`` unless ``stage`` is given (trained in an
    ensemble), log it to MLflow and tell the study; a failure fails this cell only."""
    cell = parse_key(key)
    attrs: dict = {"worker": f"{socket.gethostname()}:{os.getpid()}"}
    value, reason = None, None
    with queue.heartbeat(trial):
        try:
            cell_ws = ws
            if ws.cfg.sweep.tune and ws.cfg.sweep.tune_scope == "cell":
                attrs["tuned"] = tune_cell(ws, queue.store, cell, parent_id)
                cell_ws = ws.with_config(with_train(ws.cfg, attrs["tuned"], cell.task))
            if stage is None:
                stage = cell_stage(cell_ws, cell)
            with ws.lock(f"mlflow-{key}"):
                # None while MLflow is unreachable: the result is in the stage folder and a
                # later sweep or ``sync`` logs it.
                attrs["mlflow_run_id"] = log_cell(cell_ws, cell, stage, parent_id)
            faults.point("trial.logged")
            attrs |= {"stage": stage.key, "computed": stage.computed}
            value = stage.done["summary"]["primary"]
        except Exception as exc:  # one broken cell must not stop the sweep
            reason = mask_uri(f"{type(exc).__name__}: {exc}")
            log.debug("cell %s failed:\n%s", key, traceback.format_exc())
            try:
                with ws.lock(f"mlflow-{key}"):
                    _log_failure(ws, cell, reason, parent_id)
            except Exception as log_exc:  # the reason still reaches the study and the summary
                log.warning("could not log the failure of %s to MLflow: %s", key, log_exc)
            attrs["error"] = reason[:2000]
        except KeyboardInterrupt:
            _fail_interrupted(queue, trial)
            raise
    try:
        for name, attr in attrs.items():
            trial.set_user_attr(name, attr)
        if reason is None:
            queue.study.tell(trial, value, skip_if_finished=True)
        else:
            queue.study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Given up as stale while it ran (heartbeats were delayed): its retry reuses the
        # stage and finds the MLflow run logged, so nothing is done twice.
        log.warning("cell %s finished after its trial was given up; the retry reuses it", key)


def _log_failure(ws: Workspace, cell: GridCell, reason: str, parent_id: str | None) -> None:
    tracker = ws.tracker
    tags = cell_tags(cell) | {"status": "failed"} | environment_tags(environment())
    run_id = tracker.start_run(cell.key(), tags, parent_id)
    tracker.set_tag(run_id, "error", reason[:5000])
    tracker.end_run(run_id, "FAILED")


def _backfill(
    ws: Workspace, queue: CellQueue, cells: list[GridCell], parent_id: str | None
) -> None:
    """Log cells that are COMPLETE in the study but whose stage has no FINISHED MLflow run
    (a crash between logging and telling, or a deleted tracking store). Only COMPLETE
    cells: one still running elsewhere is logged by its worker. Their stages are reused."""
    done = queue.last_complete()
    logged = ws.tracker.finished_runs("cell", "stage")
    for cell in cells:
        trial = done.get(cell.key())
        if trial is None or trial.user_attrs.get("stage") in logged:
            continue
        tuned = trial.user_attrs.get("tuned")
        cell_ws = ws.with_config(with_train(ws.cfg, tuned, cell.task)) if tuned else ws
        with ws.lock(f"mlflow-{cell.key()}"):
            log_cell(cell_ws, cell, cell_stage(cell_ws, cell), parent_id)


def _write_atomic(path: Path, text: str) -> None:
    # Several workers write the same file; a reader must never see half of it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
