"""A thin MLflow wrapper with explicit run ids (no global active run).

Explicit ids let one process log a parent sweep run, child cell runs and generator runs
without MLflow's thread-local state, and let a later invocation find what is already
logged (``finished_runs``) so that nothing is logged twice.

A tracking store that cannot be reached (a server that is down, at the start or midway)
must not cost results: the tracker then goes *offline*, every later call is a no-op, the
results stay in their stage folders, and ``python -m benchmark sync`` logs them when the
store is back. Any other MLflow error is raised as usual.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from benchmark import faults
from benchmark.database_urls import is_database_url, sqlite_file, url_scheme, with_driver
from benchmark.redact import mask_uri, unmasked
from benchmark.sqlite_store import create_sqlite_store, default_artifact_location

log = logging.getLogger(__name__)


# The run-level metrics a cell's MLflow run carries beside its ``test/<name>`` ones: logged
# from its metrics.json (sweeps.cell.log_cell) and collected into the report's runs table.
CELL_RUN_METRICS = (
    "epochs_to_95",
    "seconds_to_95",
    "val_auc",
    "train_seconds",
    "best_epoch",
    "optimiser_steps",  # what a cell's training cost in updates (downstream.train budget)
)
# The prefix of a cell run's params that name what decided its result apart from its axes
# (sweeps.workspace.Workspace.cell_settings); reports compare them across a table's runs.
SETTINGS_PARAM = "settings"
_MAX_BATCH = 1000  # MLflow's per-request limit on metrics
_MAX_PARAMS = 100
_MAX_PARAM_LEN = 6000


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (lists as their text)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = str(value)
    return out


_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "mysql": 3306}


def reachable(uri: str, timeout: float = 3.0) -> bool:
    """Whether the host of a network tracking URI accepts a TCP connection.

    Local stores (sqlite, file) and URIs this cannot judge count as reachable: their
    errors are real errors, never a reason to go offline.
    """
    parts = urlsplit(uri)
    scheme = url_scheme(uri)
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return True
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return True  # a malformed port is a configuration error, raised by MLflow itself
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tolerant(default: Callable[[], Any] = lambda: None, per_run: bool = True):
    """Run an MLflow call unless offline; go offline (and return ``default()``) when it
    fails because the store cannot be reached. For a call on a run (``per_run``: the first
    argument is a run id) an id of None, a run never created because the store was down,
    makes it a no-op too."""

    def wrap(method):
        @functools.wraps(method)
        def call(self: Tracker, *args, **kwargs):
            if self.offline_reason is not None or (per_run and args[0] is None):
                return default()
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                if reachable(self.uri):
                    raise
                self._go_offline(exc)
                return default()

        return call

    return wrap


def default_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def folder_tracking_uri(run_dir: Path, configured: str | None, given: str | None = None) -> str:
    """The MLflow store of the sweep folder ``run_dir``: ``given`` (``--tracking-uri``), else
    the sweep's ``tracking.uri`` as its config.yaml records it (``configured``), else the
    folder's own ``mlflow.db``. config.yaml never holds a password: one it masked is an
    error that asks for the URI."""
    if given:
        return given
    if configured:
        advice = "pass --tracking-uri (or keep the password in ~/.pgpass / PGPASSWORD)"
        return unmasked(configured, Path(run_dir) / "config.yaml", "tracking.uri", advice)
    return default_tracking_uri(run_dir)


def artifact_location_for(uri: str, out_dir: Path) -> str | None:
    """Where a new experiment on ``uri`` keeps its artifacts: ``out_dir/mlartifacts`` for a
    database store, as MLflow's client would otherwise put them under ``./mlruns`` of the
    current folder; None (the server's choice) for a tracking server."""
    return default_artifact_location(out_dir) if is_database_url(uri) else None


def relocate_experiment(uri: str, experiment: str, new: str) -> None:
    """:func:`relocate_artifacts` for the experiment named ``experiment``, if it exists."""
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=with_driver(uri)).get_experiment_by_name(experiment)
    if exp is not None and exp.artifact_location != new:
        relocate_artifacts(uri, exp, new)


def relocate_artifacts(uri: str, exp: Any, new: str) -> None:
    """Re-point the artifacts of the MLflow experiment ``exp`` on the database store ``uri``
    at ``new`` when the folder they were in is gone: its sweep folder was moved, or copied
    to this machine. MLflow keeps artifact locations as absolute URIs and has no call to
    change them; left alone, new artifacts would go to a re-made copy of the old path and
    readers would find none of the old ones. A location that still exists is kept."""
    old = exp.artifact_location
    if not old.startswith("file://") or Path(url2pathname(urlsplit(old).path)).exists():
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(with_driver(uri))
    ids = {"new": new, "old": old, "id": int(exp.experiment_id)}
    try:
        with engine.begin() as con:  # the experiment and all its runs move, or none
            con.execute(
                sqlalchemy.text(
                    "UPDATE experiments SET artifact_location = :new "
                    "WHERE experiment_id = :id AND artifact_location = :old"
                ),
                ids,
            )
            con.execute(
                sqlalchemy.text(
                    "UPDATE runs SET artifact_uri = :new || substr(artifact_uri, :cut) "
                    "WHERE experiment_id = :id AND substr(artifact_uri, 1, :cut - 1) = :old"
                ),
                ids | {"cut": len(old) + 1},
            )
    finally:
        engine.dispose()
    log.warning(
        "MLflow experiment %r: artifacts re-pointed from %s (gone) to %s", exp.name, old, new
    )


class Tracker:
    """One MLflow experiment: create runs, log batched metrics/params/artifacts, find runs."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        """``artifact_location`` applies to an experiment this creates; on a SQLite file it
        defaults to ``mlartifacts`` beside the file (MLflow's own default is ``./mlruns`` of
        whatever folder the process runs in)."""
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        # MLflow's default HTTP retries back off for minutes; a dead server should cost
        # seconds before the tracker goes offline. The user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        from mlflow.tracking import MlflowClient  # heavy import, kept off module import

        # MLflow logs its DB migrations at INFO on first use of a store; keep the terminal
        # readable. (After the import: importing mlflow sets its logger's level itself.)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)

        self.uri = uri
        self.experiment = experiment
        self.experiment_id: str | None = None
        self.offline_reason: str | None = None
        self._kinds: dict[str, str] = {}  # run id -> kind tag, to name the fault points
        db_file = sqlite_file(uri)
        if artifact_location is None and db_file is not None:
            artifact_location = default_artifact_location(db_file.parent)
        create_sqlite_store(uri, artifact_location)
        self.client = MlflowClient(tracking_uri=with_driver(uri))
        if not reachable(uri):
            self._go_offline(ConnectionError("connection refused"))
            return
        self._open_experiment(artifact_location)

    @_tolerant(per_run=False)
    def _open_experiment(self, artifact_location: str | None) -> None:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=artifact_location
                )
            except Exception:  # another worker created it between our two calls
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id
            if artifact_location and exp.artifact_location != artifact_location:
                relocate_artifacts(self.uri, exp, artifact_location)

    def _go_offline(self, exc: BaseException) -> None:
        self.offline_reason = mask_uri(f"{type(exc).__name__}: {exc}")[:300]
        log.warning(
            "MLflow tracking at %s is unreachable (%s); results stay in their stage folders: "
            "run `python -m benchmark sync <out>` when it is back",
            mask_uri(self.uri),
            self.offline_reason,
        )

    @property
    def offline(self) -> bool:
        return self.offline_reason is not None

    def __repr__(self) -> str:
        return f"Tracker({mask_uri(self.uri)!r}, {self.experiment!r})"

    # -- runs
    @_tolerant(per_run=False)
    def start_run(
        self, name: str, tags: Mapping[str, Any], parent_id: str | None = None
    ) -> str | None:
        """A new run's id; None when the store cannot be reached (the tracker is offline)."""
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        kind = self._kinds[run.info.run_id] = tags.get("kind", "run")
        faults.point(f"mlflow.{kind}.started")
        return run.info.run_id

    @_tolerant()
    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        faults.point(f"mlflow.{self._kinds.get(run_id, 'run')}.ending")
        self.client.set_terminated(run_id, status=status)

    @_tolerant()
    def set_status(self, run_id: str | None, status: str) -> None:
        """Reopen (``RUNNING``) or close a run without a new end time."""
        self.client.update_run(run_id, status=status)

    @_tolerant()
    def set_tag(self, run_id: str | None, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    @_tolerant(list, per_run=False)
    def find_runs(self, filter_string: str, statuses: Iterable[str] | None = None) -> list:
        """All runs of the experiment matching ``filter_string`` (paged through)."""
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        if statuses is not None:
            wanted = set(statuses)
            runs = [r for r in runs if r.info.status in wanted]
        return runs

    @_tolerant(dict, per_run=False)
    def finished_runs(self, kind: str, tag: str) -> dict[str, str]:
        """``{tag value: run id}`` of the FINISHED runs of ``kind`` (e.g. cells by cell_key)."""
        runs = self.find_runs(f"tags.kind = '{kind}'", statuses=["FINISHED"])
        return {r.data.tags[tag]: r.info.run_id for r in runs if tag in r.data.tags}

    @_tolerant(per_run=False)
    def logged_run(self, kind: str, tag: str, value: str) -> str | None:
        """The FINISHED run of ``kind`` whose tag ``tag`` is ``value``, or None.

        Runs of it left RUNNING (their process died while logging them) are closed as
        KILLED and soft-deleted, so that the caller logs the result anew and exactly one
        visible run remains. Callers serialise log-once sequences with a lock.
        """
        runs = self.find_runs(f"tags.kind = '{kind}' and tags.{tag} = '{value}'")
        finished = [r for r in runs if r.info.status == "FINISHED"]
        if finished:
            return finished[0].info.run_id
        for run in runs:
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, status="KILLED")
                self.client.delete_run(run.info.run_id)
        return None

    @_tolerant(int, per_run=False)
    def supersede(self, kind: str, tags: Mapping[str, str], keep: str) -> int:
        """Retire the FINISHED runs of ``kind`` whose tags equal ``tags``, all but ``keep``:
        their ``kind`` becomes ``<kind>-superseded`` (and ``superseded_by`` names ``keep``),
        so reports, which read one kind, see one result per cell or synthetic set, while
        the UI keeps the history. The number retired."""
        where = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        old = [
            r
            for r in self.find_runs(f"tags.kind = '{kind}' and {where}", statuses=["FINISHED"])
            if r.info.run_id != keep
        ]
        for run in old:
            self.client.set_tag(run.info.run_id, "superseded_by", keep)
            self.client.set_tag(run.info.run_id, "kind", f"{kind}-superseded")
        return len(old)

    # -- logging
    @_tolerant()
    def log_params(self, run_id: str | None, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run_id, params=items[i : i + _MAX_PARAMS])
            faults.point(f"mlflow.{self._kinds.get(run_id, 'run')}.params")

    def log_metrics(self, run_id: str | None, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_curves(run_id, {k: {step: v} for k, v in metrics.items()})

    @_tolerant()
    def log_curves(
        self, run_id: str | None, curves: Mapping[str, Mapping[int, float] | list]
    ) -> None:
        """Log whole curves in few requests: ``{name: {step: value}}`` or ``{name: [values]}``.

        A list is logged with steps 1, 2, ... (epochs). Non-finite values are skipped:
        MLflow stores them, but they break every plot and mean downstream.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for name, values in curves.items():
            pairs = enumerate(values, start=1) if isinstance(values, list) else values.items()
            for step, value in pairs:
                if value is None or value != value or value in (float("inf"), float("-inf")):
                    continue
                items.append(Metric(name, float(value), now, int(step)))
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + _MAX_BATCH])
            faults.point(f"mlflow.{self._kinds.get(run_id, 'run')}.metrics")

    @_tolerant()
    def log_artifact(
        self, run_id: str | None, path: Path, artifact_path: str | None = None
    ) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)
        faults.point(f"mlflow.{self._kinds.get(run_id, 'run')}.artifact")

    @_tolerant()
    def log_text(self, run_id: str | None, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)
