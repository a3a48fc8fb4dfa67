"""The work queue on every storage kind: atomic claims, no stray trials, duplicates dropped,
and a silent worker's cell back in the queue after the grace period."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest

from benchmark.config import ConfigError, SweepConfig, load_config
from benchmark.redact import mask_uri
from sweeps.queue import _CLAIMED, _HEARTBEAT, CELL_KEY, CellQueue
from sweeps.storage import open_storage
from sweeps.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
FAST = SweepConfig(heartbeat_interval=1, grace_period=2, max_retries=2)


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    if request.param == "journal":
        return f"journal:///{tmp_path / 'optuna.log'}"
    # Asked for here only: as a parameter it would skip the other storages without a server.
    return request.getfixturevalue("pg_url")()  # skips without ECHOSYNTH_TEST_PG


def open_queue(url: str, out: Path, name: str = "q") -> CellQueue:
    store = open_storage(url, out, FAST)
    study = optuna.create_study(study_name=name, storage=store.storage, load_if_exists=True)
    return CellQueue(study, store)


def test_claims_each_cell_once_and_never_invents_a_trial(storage_url, tmp_path):
    queue = open_queue(storage_url, tmp_path)
    keys = ["a", "b"]
    assert queue.enqueue_missing(keys) == 2
    assert queue.enqueue_missing(keys) == 0  # waiting cells are not queued twice
    claimed = [queue.claim(keys), queue.claim(keys)]
    assert sorted(t.user_attrs[CELL_KEY] for t in claimed) == keys
    assert queue.claim(keys) is None  # an empty queue creates no trial (study.ask() would)
    assert len(queue.study.get_trials()) == 2
    assert queue.pending(keys) == (0, 2)
    for trial in claimed:
        queue.study.tell(trial, 1.0)
    assert queue.pending(keys) == (0, 0) and queue.complete(keys) == set(keys)


def test_a_queue_sees_the_trials_of_its_own_settings_only(storage_url, tmp_path):
    first = open_queue(storage_url, tmp_path)
    first.enqueue_missing(["a"])
    first.study.tell(first.claim(["a"]), 1.0)
    other = CellQueue(first.study, first.store, config="other-settings")
    assert other.complete(["a"]) == set() and other.enqueue_missing(["a"]) == 1
    assert first.claim(["a"]) is None  # the other settings' trial is not this queue's
    trial = other.claim(["a"])
    assert trial is not None and trial.user_attrs["config"] == "other-settings"
    assert first.complete(["a"]) == {"a"} and other.pending(["a"]) == (0, 1)


def test_a_cell_queued_twice_runs_once(storage_url, tmp_path):
    queue = open_queue(storage_url, tmp_path)
    for _ in range(2):  # as two workers enqueueing at the same moment would
        queue.study.enqueue_trial({}, user_attrs={CELL_KEY: "a"})
    first = queue.claim(["a"])
    assert first is not None
    assert queue.claim(["a"]) is None  # the copy is dropped (PRUNED), not run
    states = sorted(t.state.name for t in queue.study.get_trials())
    assert states == ["PRUNED", "RUNNING"]


def test_a_silent_worker_loses_its_cell_and_a_beating_one_keeps_it(storage_url, tmp_path):
    queue = open_queue(storage_url, tmp_path)
    queue.enqueue_missing(["dead", "alive", "unbeaten"])
    dead = queue.claim(["dead"])  # claimed, then its worker "dies": no more heartbeats
    alive = queue.claim(["alive"])
    # A worker that died between taking a trial and its first heartbeat.
    (unbeaten,) = [t for t in queue.study.get_trials() if t.user_attrs[CELL_KEY] == "unbeaten"]
    unbeaten_id = queue.storage.get_trial_id_from_study_id_trial_number(
        queue.study_id, unbeaten.number
    )
    assert queue.storage.set_trial_state_values(unbeaten_id, optuna.trial.TrialState.RUNNING)
    with queue.heartbeat(alive):
        queue.requeue_stale()
        assert queue.pending(["dead", "unbeaten"]) == (0, 2)  # within the grace period
        time.sleep(FAST.grace_period + 1.5)
        queue.requeue_stale()
        assert queue.pending(["dead", "unbeaten"]) == (2, 0)  # back in the queue
        assert queue.pending(["alive"]) == (0, 1)  # its heartbeat kept it
    retry = queue.claim(["dead"])
    assert retry is not None and retry.number != dead.number
    assert retry.user_attrs[CELL_KEY] == "dead"
    assert queue.study.get_trials()[dead.number].state is optuna.trial.TrialState.FAIL
    queue.study.tell(alive, 0.5)
    assert queue.complete(["dead", "alive"]) == {"alive"}


def test_a_retry_is_judged_by_its_own_signs_of_life(storage_url, tmp_path):
    """A retry copies its dead predecessor's system attributes (Optuna's retry callback):
    neither their claim marker (which made a retry whose worker died before its first beat
    RUNNING forever) nor their heartbeat (which failed a retry just claimed) is its own."""
    queue = open_queue(storage_url, tmp_path)
    queue.enqueue_missing(["a"])
    dead = queue.claim(["a"])
    dead_id = queue.storage.get_trial_id_from_study_id_trial_number(queue.study_id, dead.number)
    # Its worker beat, then died long ago; another worker failed it and queued the retry.
    for attr in (_CLAIMED, _HEARTBEAT):
        if attr in queue.storage.get_trial(dead_id).system_attrs:
            queue.storage.set_trial_system_attr(dead_id, attr, time.time() - 60)
    assert queue.storage.set_trial_state_values(dead_id, optuna.trial.TrialState.FAIL)
    queue.store.retry(queue.study, queue.storage.get_trial(dead_id))
    (retry,) = queue.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    # A worker takes the retry and dies before its first heartbeat.
    retry_id = queue.storage.get_trial_id_from_study_id_trial_number(queue.study_id, retry.number)
    assert queue.storage.set_trial_state_values(retry_id, optuna.trial.TrialState.RUNNING)
    queue.requeue_stale()
    assert queue.pending(["a"]) == (0, 1)  # within the grace period of its own start
    time.sleep(FAST.grace_period + 1.5)
    queue.requeue_stale()
    assert queue.pending(["a"]) == (1, 0)  # back in the queue, not RUNNING forever


def test_workers_racing_for_the_queue_split_it(storage_url, tmp_path):
    """Three workers, each with its own connection (threads: the database cannot tell
    them from processes), drain one queue: every cell is claimed exactly once."""
    keys = [f"cell{i}" for i in range(24)]
    open_queue(storage_url, tmp_path).enqueue_missing(keys)
    barrier = threading.Barrier(3)
    claimed: list[list[str]] = [[], [], []]

    def drain(mine: list[str]) -> None:
        queue = open_queue(storage_url, tmp_path)
        barrier.wait()  # start together, so the claims really race
        while (trial := queue.claim(keys)) is not None:
            mine.append(trial.user_attrs[CELL_KEY])
            queue.study.tell(trial, 0.0)

    threads = [threading.Thread(target=drain, args=(mine,)) for mine in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(k for mine in claimed for k in mine) == sorted(keys)
    assert len(open_queue(storage_url, tmp_path).study.get_trials()) == len(keys)


def test_storage_urls_and_their_errors(tmp_path):
    store = open_storage(None, tmp_path, FAST)
    assert store.url == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    import sqlite3

    mode = sqlite3.connect(tmp_path / "optuna.db").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)
    assert not open_storage(str(tmp_path / "q.log"), tmp_path, FAST).native_heartbeat
    with pytest.raises(ValueError, match=r"sweep.storage 'redis://u:\*\*\*@h/0'") as err:
        open_storage("redis://u:hunter2@h/0", tmp_path, FAST)
    assert "hunter2" not in str(err.value)


def test_resolved_config_and_parent_params_hide_passwords(tmp_path):
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        [
            "sweep.storage=postgresql://bench:hunter2@db.example/optuna",
            "tracking.uri=postgresql://bench:hunter2@db.example/mlflow",
        ],
    )
    ws = Workspace(cfg, tmp_path, progress=False)
    assert "hunter2" not in ws.resolved
    assert "postgresql://bench:***@db.example/optuna" in ws.resolved
    assert "postgresql://bench:***@db.example/mlflow" in ws.resolved

    logged = {}

    class Tracker:  # records what the parent run would log
        def find_runs(self, *_):
            return []

        def start_run(self, *_):
            return "run"

        def log_params(self, _run, params):
            logged.update(params)

    ws.__dict__["tracker"] = Tracker()
    from sweeps.grid import parent_run

    parent_run(ws)
    assert logged["sweep.storage"] == mask_uri(cfg.sweep.storage)
    assert logged["tracking.uri"] == mask_uri(cfg.tracking.uri)
    assert "hunter2" not in repr(logged)


@pytest.mark.parametrize(
    "override, key",
    [
        ("sweep.grace_period=1", "sweep.grace_period"),
        ("sweep.heartbeat_interval=0", "sweep.heartbeat_interval"),
        ("sweep.max_retries=-1", "sweep.max_retries"),
        ("sweep.tune_lr=[0.1,0.01]", "sweep.tune_lr"),
        ("sweep.tune_epochs=[0,3]", "sweep.tune_epochs"),
        ("sweep.tune_batch_sizes=[]", "sweep.tune_batch_sizes"),
        ("sweep.tune_scope=all", "sweep.tune_scope"),
        ("sweep.tune_trials=0", "sweep.tune_trials"),
    ],
)
def test_sweep_settings_are_checked(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(REPO / "configs" / "smoke.yaml", [override])


def test_presets_keep_tuning_off():
    for preset in ("smoke", "quick", "paper"):
        cfg = load_config(REPO / "configs" / f"{preset}.yaml", ["data.root=/data/CAMUS"])
        assert cfg.sweep.tune is False


def test_fit_reports_every_epoch_and_stops_when_told():
    import torch

    from benchmark.downstream_config import TrainConfig
    from downstream.training import fit

    class Toy:
        primary_metric = "score"

        def loader(self, data, batch_size, train, seed, device=None):
            return [{"x": torch.ones(2, 1)}]

        def loss(self, model, batch, device):
            return (model(batch["x"]) ** 2).mean()

        def validate(self, model, data, device):
            return 0.5

    cfg = TrainConfig(epochs=4, patience=10)
    seen = []
    fit(
        torch.nn.Linear(1, 1),
        Toy(),
        [0],
        [0],
        cfg,
        torch.device("cpu"),
        0,
        progress=False,
        on_epoch=lambda e, s: seen.append((e, s)),
    )
    assert seen == [(1, 0.5), (2, 0.5), (3, 0.5), (4, 0.5)]

    def stop(epoch, score):
        if epoch == 2:
            raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        fit(
            torch.nn.Linear(1, 1),
            Toy(),
            [0],
            [0],
            cfg,
            torch.device("cpu"),
            0,
            progress=False,
            on_epoch=stop,
        )
