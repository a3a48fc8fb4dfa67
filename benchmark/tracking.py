"""A thin MLflow wrapper with explicit run ids (no global active run).

Explicit ids let one process log a parent sweep run, child cell runs and generator runs
without MLflow's thread-local state, and let a later invocation find what is already
logged (``finished_runs``) so that nothing is logged twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.redact import mask_uri

# MLflow logs its DB migrations at INFO on first use of a store; keep the terminal readable.
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

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


def default_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def default_artifact_location(out_dir: Path) -> str:
    # Without it MLflow puts a SQLite store's artifacts under ./mlruns of the current folder.
    return (Path(out_dir).resolve() / "mlartifacts").as_uri()


class Tracker:
    """One MLflow experiment: create runs, log batched metrics/params/artifacts, find runs."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        from mlflow.tracking import MlflowClient  # heavy import, kept off module import

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifact_location
                )
            except Exception:  # another worker created it between our two calls
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment

    def __repr__(self) -> str:
        return f"Tracker({mask_uri(self.uri)!r}, {self.experiment!r})"

    # -- runs
    def start_run(self, name: str, tags: Mapping[str, Any], parent_id: str | None = None) -> str:
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

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

    def finished_runs(self, kind: str, tag: str) -> dict[str, str]:
        """``{tag value: run id}`` of the FINISHED runs of ``kind`` (e.g. cells by cell_key)."""
        runs = self.find_runs(f"tags.kind = '{kind}'", statuses=["FINISHED"])
        return {r.data.tags[tag]: r.info.run_id for r in runs if tag in r.data.tags}

    # -- logging
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run_id, params=items[i : i + _MAX_PARAMS])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_curves(run_id, {k: {step: v} for k, v in metrics.items()})

    def log_curves(self, run_id: str, curves: Mapping[str, Mapping[int, float] | list]) -> None:
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

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)
