"""The grid's work queue: one Optuna study, one trial per canonical cell.

A cell waits as a WAITING trial whose user attribute ``cell_key`` names it. A worker
claims one by moving it to RUNNING with the storage's compare-and-set
(``set_trial_state_values`` refuses when the trial is no longer WAITING), so two workers
never hold the same trial, and a worker never creates a trial of its own: ``study.ask()``
would invent a fresh, cell-less trial whenever another worker emptied the queue first.

While a worker runs a cell a heartbeat thread keeps the trial alive. A worker that dies
(SIGKILL, lost machine) stops beating; after ``grace_period`` any other worker fails the
trial and the retry callback enqueues a WAITING copy with the same cell key, so the cell is
run again (at most ``max_retries`` times; a later sweep re-enqueues it anyway).

Database storages use Optuna's own heartbeat (``fail_stale_trials``); the journal file has
none, so its heartbeat is a trial system attribute compared with the local clock. A trial
whose worker died before its first heartbeat has no sign of life but its start time, which
then stands in for it (Optuna alone would wait for it forever). A retry starts with a copy
of its dead predecessor's system attributes; their heartbeat and claim marker are not its own.

A trial also records the sweep's ``config`` (``Workspace.results_config``: a hash of the
settings that decide a cell's result), and a queue sees only the trials of its own. A sweep
into a folder swept before with other settings therefore runs every cell again: the cells
these settings change are recomputed, the others are found in their stage folders (seconds).
Without it a changed ``downstream.train.epochs`` found every cell COMPLETE and recomputed
nothing, while ``config.yaml`` named the new value.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.storage import SweepStorage, quiet_experimental

log = logging.getLogger(__name__)

CELL_KEY = "cell_key"
CONFIG = "config"  # user attribute: the results config a trial was enqueued under
_HEARTBEAT = "echosynth_heartbeat"  # unix time of the last beat (journal storage only)
_CLAIMED = "echosynth_claimed"  # set once the first native heartbeat is recorded
# Storage hiccups (a busy SQLite file, a dropped connection) must not kill a worker that
# is only polling; the next poll tries again.
_TRANSIENT = (optuna.exceptions.StorageInternalError, OSError)


class CellQueue:
    """Enqueue, claim, keep alive and requeue the cell trials of one study."""

    def __init__(self, study: optuna.Study, store: SweepStorage, config: str = "") -> None:
        self.study = study
        self.store = store
        self.storage = store.storage
        self.study_id = self.storage.get_study_id_from_name(study.study_name)
        self.config = config

    # ------------------------------------------------------------------ queue
    def _ours(self, trial: FrozenTrial) -> bool:
        """A trial of this queue's config (trials of an older sweep carry none: "")."""
        return trial.user_attrs.get(CONFIG, "") == self.config

    def trials_by_cell(self) -> dict[str, list[FrozenTrial]]:
        by_key: dict[str, list[FrozenTrial]] = {}
        for t in self.study.get_trials(deepcopy=False):
            key = t.user_attrs.get(CELL_KEY)
            if key is not None and self._ours(t):
                by_key.setdefault(key, []).append(t)
        return by_key

    def enqueue_missing(self, keys: Iterable[str]) -> int:
        """Enqueue every cell that has no COMPLETE, WAITING or RUNNING trial.

        Callers serialise this (a file lock in the output folder): two workers enqueueing
        at once would queue a cell twice. ``claim`` drops such a duplicate anyway.
        """
        busy = {TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING}
        by_key = self.trials_by_cell()
        todo = [k for k in keys if not busy & {t.state for t in by_key.get(k, [])}]
        for key in todo:
            self.study.enqueue_trial({}, user_attrs={CELL_KEY: key, CONFIG: self.config})
        return len(todo)

    def claim(self, keys: Iterable[str]) -> optuna.trial.Trial | None:
        """Atomically take one WAITING trial of these cells (now RUNNING), or None."""
        wanted = set(keys)
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            key = frozen.user_attrs.get(CELL_KEY)
            if key not in wanted or not self._ours(frozen):
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, frozen.number
            )
            try:
                if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    continue  # another worker took it first
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            self._beat(trial_id)  # alive from the first moment, before any slow work
            if self.store.native_heartbeat:
                # Optuna ignores a RUNNING trial that never beat; this marks the ones that
                # did, so one whose worker died between the claim and the beat is found too.
                self.storage.set_trial_system_attr(trial_id, _CLAIMED, time.time())
            trial = optuna.trial.Trial(self.study, trial_id)
            duplicate = self._duplicate_of(key, frozen.number)
            if duplicate is not None:
                trial.set_user_attr("skipped", f"duplicate of trial {duplicate}")
                self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                continue
            return trial
        return None

    def _duplicate_of(self, key: str, number: int) -> int | None:
        """Another trial of the same cell that is done, or running and older than ours."""
        for t in self.trials_by_cell().get(key, []):
            if t.number == number:
                continue
            if t.state is TrialState.COMPLETE or (
                t.state is TrialState.RUNNING and t.number < number
            ):
                return t.number
        return None

    def pending(self, keys: Iterable[str]) -> tuple[int, int]:
        """(waiting, running) trials of these cells that have no COMPLETE trial yet."""
        waiting = running = 0
        by_key = self.trials_by_cell()
        for key in keys:
            states = [t.state for t in by_key.get(key, [])]
            if TrialState.COMPLETE in states:
                continue
            waiting += states.count(TrialState.WAITING)
            running += states.count(TrialState.RUNNING)
        return waiting, running

    # ------------------------------------------------------------------ liveness
    def _beat(self, trial_id: int) -> None:
        if self.store.native_heartbeat:
            self.storage.record_heartbeat(trial_id)
        else:
            self.storage.set_trial_system_attr(trial_id, _HEARTBEAT, time.time())

    @contextlib.contextmanager
    def heartbeat(self, trial: optuna.trial.Trial) -> Iterator[None]:
        """Beat every ``heartbeat_interval`` seconds in a thread while the body runs."""
        stop = threading.Event()
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

        def beat() -> None:
            while not stop.wait(self.store.heartbeat_interval):
                try:
                    self._beat(trial_id)
                except optuna.exceptions.UpdateFinishedTrialError:
                    return  # failed as stale meanwhile; the result will be dropped
                except _TRANSIENT as exc:  # one missed beat is harmless, many make it stale
                    log.warning("heartbeat of trial %d failed: %s", trial.number, exc)

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def requeue_stale(self) -> None:
        """Fail RUNNING trials whose worker stopped beating and enqueue their retries."""
        try:
            if self.store.native_heartbeat:
                with quiet_experimental():
                    optuna.storages.fail_stale_trials(self.study)
                self._requeue_silent(self._unbeaten_since)
            else:
                self._requeue_silent(lambda t: _latest(t.system_attrs.get(_HEARTBEAT), _start(t)))
        except _TRANSIENT as exc:
            log.warning("could not check for stale trials: %s", exc)

    def _unbeaten_since(self, trial: FrozenTrial) -> float | None:
        """The start of a trial that never beat to Optuna; None once it did (Optuna judges it).

        A retry holds a copy of its dead predecessor's system attributes (Optuna's retry
        callback), claim marker included. That copy predates the retry's start by more than
        the grace period (the predecessor was failed as stale before the retry existed), so
        only a marker from about the trial's start on (a heartbeat interval's slack, for
        databases that store whole seconds) is its own."""
        start = _start(trial)
        claimed = trial.system_attrs.get(_CLAIMED)
        if claimed is None or start is None or claimed < start - self.store.heartbeat_interval:
            return start
        return None

    def _requeue_silent(self, last_sign_of_life) -> None:
        """Fail and retry RUNNING trials whose last sign of life (unix time, or None to
        leave the trial to Optuna) is older than the grace period."""
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            last = last_sign_of_life(t)
            if last is None or now - last <= self.store.grace_period:
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            try:
                won = self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it first; it also enqueued the retry
            if won:
                self.store.retry(self.study, self.storage.get_trial(trial_id))

    # ------------------------------------------------------------------ outcome
    def failed(self, keys: Iterable[str]) -> dict[str, str]:
        """Cells with no COMPLETE trial whose latest trial failed: key -> reason."""
        out = {}
        by_key = self.trials_by_cell()
        for key in keys:
            trials = sorted(by_key.get(key, []), key=lambda t: t.number)
            if not trials or any(t.state is TrialState.COMPLETE for t in trials):
                continue
            last = trials[-1]
            if last.state is TrialState.FAIL:
                out[key] = last.user_attrs.get(
                    "error", f"its worker stopped sending heartbeats ({len(trials)} tries)"
                )
        return out

    def computed_since(self, keys: Iterable[str], started: float) -> list[str]:
        """Cells whose stage some worker computed (not reused) after ``started``."""
        wanted = set(keys)
        return sorted(
            t.user_attrs[CELL_KEY]
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get(CELL_KEY) in wanted
            and self._ours(t)
            and t.user_attrs.get("computed")
            and t.datetime_complete is not None
            and _unix(t.datetime_complete) >= started
        )

    def last_complete(self) -> dict[str, FrozenTrial]:
        """The latest COMPLETE trial of each cell that has one (its ``stage`` attribute
        names the stage folder it settled on)."""
        last = {}
        for key, trials in self.trials_by_cell().items():
            done = [t for t in trials if t.state is TrialState.COMPLETE]
            if done:
                last[key] = max(done, key=lambda t: t.number)
        return last

    def complete(self, keys: Iterable[str]) -> set[str]:
        by_key = self.trials_by_cell()
        return {k for k in keys if any(t.state is TrialState.COMPLETE for t in by_key.get(k, []))}


def _start(trial: FrozenTrial) -> float | None:
    return None if trial.datetime_start is None else _unix(trial.datetime_start)


def _latest(*moments: float | None) -> float | None:
    # A retry's copied heartbeat is its predecessor's, older than the retry's own start.
    return max((m for m in moments if m is not None), default=None)


def _unix(moment: datetime) -> float:
    # Database storages store naive local times, the journal aware UTC ones;
    # ``timestamp()`` reads a naive time as local, so both compare with time.time().
    return moment.timestamp()
