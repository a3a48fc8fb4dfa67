"""The Optuna storage behind a sweep, built from ``sweep.storage`` for many processes.

- ``None``: ``sqlite:///<out>/optuna.db``, the default for one machine.
- ``sqlite:///PATH``: SQLite made safe for several local processes: a busy timeout, WAL,
  and every transaction begun ``IMMEDIATE`` so a read-then-write (popping a queued trial)
  never dies half-way with ``database is locked`` when another process wrote in between.
- ``journal:///PATH`` or a path ending in ``.log``: Optuna's journal file, for a shared
  file system where SQLite's locks are unreliable (NFS).
- ``postgresql://...`` (or ``mysql://...``): one database for many machines.

Database storages get Optuna's heartbeat and a retry callback: a worker that dies leaves a
RUNNING trial whose heartbeat stops; ``fail_stale_trials`` fails it and the callback puts a
WAITING copy (same cell key) back in the queue. The journal has no native heartbeat;
``sweeps.queue`` records one as a trial attribute instead. URLs are masked wherever they
are shown (``benchmark.redact.mask_uri``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from benchmark.config import SweepConfig
from benchmark.database_urls import DATABASE_SCHEMES, sqlite_file, url_scheme, with_driver
from benchmark.redact import mask_uri, scrub
from benchmark.tracking import reachable


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna marks its heartbeat API experimental; the warning gives a user nothing to do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


_DATABASES = ("sqlite", "postgresql", "postgres", "mysql")


@dataclass
class SweepStorage:
    """An opened storage and what the queue needs to know about it."""

    storage: BaseStorage
    url: str = field(repr=False)  # may hold a password: show it only through ``masked``
    heartbeat_interval: int
    grace_period: int
    max_retries: int

    @property
    def masked(self) -> str:
        return mask_uri(self.url)

    @property
    def native_heartbeat(self) -> bool:
        """True if the storage records heartbeats itself (the database storages)."""
        return isinstance(self.storage, RDBStorage)

    def retry(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Put a dead worker's trial back in the queue (used where Optuna does not)."""
        _retry_callback(self.max_retries)(study, trial)


def default_storage_url(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'optuna.db'}"


def open_storage(url: str | None, out: Path, cfg: SweepConfig) -> SweepStorage:
    """Open (creating if needed) the storage named by ``url``; see the module docstring."""
    url = url or default_storage_url(out)
    kind = _kind(url)
    if kind == "journal":
        path = _journal_path(url)
        _make_parent(path, "sweep.storage", url)
        if Path(path).is_dir():
            raise ValueError(f"sweep.storage {mask_uri(url)!r}: {path} is a folder, not a file")
        try:
            # The open(O_EXCL) lock works on NFSv3+, where the default symlink lock may not.
            backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        except OSError as exc:
            raise ValueError(
                f"sweep.storage {mask_uri(url)!r}: cannot open journal file {path} "
                f"({exc.strerror or exc})"
            ) from None
        storage: BaseStorage = JournalStorage(backend)
    else:
        storage = _open_rdb(url, kind, cfg)
    return SweepStorage(storage, url, cfg.heartbeat_interval, cfg.grace_period, cfg.max_retries)


def check_urls(storage: str | None, tracking: str | None) -> None:
    """Fail fast, before any work, on a storage or tracking URL that cannot work: an unknown
    scheme, a malformed URL, a missing database driver, a database that does not answer
    (``connect_timeout`` seconds), or a SQLite/journal file whose folder cannot be made.
    Messages name the option and the URL with its password masked."""
    if storage:
        kind = _kind(storage)
        if kind == "journal":
            _check_parent(_journal_path(storage), "sweep.storage", storage)
        elif kind == "sqlite":
            _check_parent(_sqlite_path(storage, "sweep.storage"), "sweep.storage", storage)
        else:
            check_database(storage, "sweep.storage")
    if tracking:
        check_tracking_uri(tracking)


# MLflow's tracking stores; anything else MLflow rejects only when the first run is logged.
_TRACKING_SCHEMES = ("http", "https", "file", "databricks", *DATABASE_SCHEMES)


def check_tracking_uri(uri: str) -> None:
    """A tracking URI MLflow can open: see :func:`check_urls`."""
    scheme = url_scheme(uri)
    if not scheme:
        return  # a plain folder: MLflow's file store
    if scheme not in _TRACKING_SCHEMES:
        raise ValueError(
            f"tracking.uri {mask_uri(uri)!r} has an unknown scheme {scheme!r}: use "
            "sqlite:///PATH, postgresql://USER@HOST/DB, http(s)://SERVER or a folder"
        )
    if scheme == "sqlite":
        _check_parent(_sqlite_path(uri, "tracking.uri"), "tracking.uri", uri)
    elif scheme in DATABASE_SCHEMES:
        # A server that does not answer is not bad input: the sweep then runs with its
        # tracker offline and `sync` logs the results later. A wrong password or database
        # on a server that answers is, and fails here.
        check_database(uri, "tracking.uri", connect=reachable(with_driver(uri)))


def check_database(url: str, option: str, connect_timeout: int = 10, connect: bool = True) -> None:
    """Parse ``url``, load its driver and (``connect``) connect once; ValueError (bad URL, no
    driver) or RuntimeError (no answer) naming ``option`` and the masked URL, never the
    password."""
    where = f"{option} {mask_uri(url)!r}"
    try:
        parsed = sqlalchemy.engine.make_url(with_driver(url))
        parsed.port  # noqa: B018 - a non-numeric port fails here, not at the first query
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise ValueError(scrub(f"{where} is not a valid database URL ({exc})", url)) from None
    backend = parsed.get_backend_name()
    # Without a timeout a host that drops packets holds the sweep for minutes.
    connect_args = (
        {"connect_timeout": connect_timeout} if backend in ("postgresql", "mysql") else {}
    )
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=connect_args)
    except (ImportError, sqlalchemy.exc.ArgumentError) as exc:
        extra = " (pip install 'echosynth-bench[postgres]')" if backend == "postgresql" else ""
        raise ValueError(
            scrub(f"{where}: the database driver is not available{extra} ({exc})", url)
        ) from None
    if not connect:
        engine.dispose()
        return
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise RuntimeError(
            scrub(f"{where}: cannot connect to the database ({reason})", url)
        ) from None
    finally:
        engine.dispose()


def _journal_path(url: str) -> str:
    return url.removeprefix("journal://") if url.startswith("journal://") else url


def _sqlite_path(url: str, option: str) -> str:
    path = sqlite_file(url)
    if path is None:
        raise ValueError(f"{option} {mask_uri(url)!r}: needs a file, e.g. sqlite:///runs/x.db")
    return str(path)


def _check_parent(path: str, option: str, url: str) -> None:
    """The folder of ``path`` exists or can be made: its nearest existing ancestor is a
    writable folder."""
    folder = Path(path).expanduser().absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{option} {mask_uri(url)!r}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {mask_uri(url)!r}: folder {folder} is not writable")


def _make_parent(path: str, option: str, url: str) -> None:
    _check_parent(path, option, url)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"{option} {mask_uri(url)!r}: cannot create folder {Path(path).parent} "
            f"({exc.strerror or exc})"
        ) from None


def _kind(url: str) -> str:
    if url.startswith("journal://") or url.endswith(".log"):
        return "journal"
    scheme = url_scheme(url)
    if scheme in _DATABASES:
        return "sqlite" if scheme == "sqlite" else "database"
    raise ValueError(
        f"sweep.storage {mask_uri(url)!r} is not a storage URL: use sqlite:///PATH, "
        "journal:///PATH (or a PATH ending in .log), or postgresql://USER@HOST/DB"
    )


def _open_rdb(url: str, kind: str, cfg: SweepConfig) -> RDBStorage:
    engine_kwargs: dict = {"pool_pre_ping": True}
    if kind == "sqlite":
        path = _sqlite_path(url, "sweep.storage")
        _make_parent(path, "sweep.storage", url)
        try:
            _enable_wal(path)
        except sqlite3.Error as exc:
            raise ValueError(
                f"sweep.storage {mask_uri(url)!r}: cannot open SQLite database {path} ({exc})"
            ) from None
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        # An unreachable server or a typo fails here at once, not after the retries below
        # (meant for the table-creation race) and never as a driver traceback.
        check_database(url, "sweep.storage")
    kwargs = dict(
        engine_kwargs=engine_kwargs,
        heartbeat_interval=cfg.heartbeat_interval,
        grace_period=cfg.grace_period,
    )
    kwargs[_RETRY_KWARG] = _retry_callback(cfg.max_retries)
    # Several workers starting at once race to create Optuna's tables in an empty
    # database; the loser's error is harmless, so try again after the winner finished.
    for attempt in range(5):
        try:
            with quiet_experimental():
                storage = RDBStorage(with_driver(url), **kwargs)
            break
        except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
            if attempt == 4:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise RuntimeError(
                    scrub(f"sweep.storage {mask_uri(url)!r}: cannot open ({reason})", url)
                ) from None
            time.sleep(1 + attempt)
    if kind == "sqlite":
        _begin_immediate(storage)
    return storage


# Optuna 4.9 renamed RDBStorage's failed_trial_callback and RetryFailedTrialCallback (both
# deprecated since) to heartbeat_stale_trial_callback and RetryHeartbeatStaleTrialCallback;
# the new names where they exist, so neither older nor newer Optuna warns.
_NEW_RETRY = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
_RETRY_KWARG = "heartbeat_stale_trial_callback" if _NEW_RETRY else "failed_trial_callback"


def _retry_callback(max_retries: int):
    """Optuna's callback that puts a trial whose heartbeat stopped back in the queue, at
    most ``max_retries`` times."""
    with quiet_experimental():
        if _NEW_RETRY:
            return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        return optuna.storages.RetryFailedTrialCallback(max_retry=max_retries)


def _enable_wal(path: str) -> None:
    # WAL is a property of the database file: set once, every later connection uses it.
    # Readers then never block the writer, which keeps the busy waits short.
    with sqlite3.connect(path, timeout=120) as con:
        con.execute("PRAGMA journal_mode=WAL")


def _begin_immediate(storage: RDBStorage) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    pysqlite begins transactions lazily and SQLite upgrades a reader to a writer only if no
    one wrote since it started reading; otherwise the upgrade fails at once, whatever the
    busy timeout. ``BEGIN IMMEDIATE`` queues writers on the timeout instead (SQLAlchemy's
    pysqlite recipe). Transactions here are milliseconds, so serialising them costs nothing.
    """
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are dropped
