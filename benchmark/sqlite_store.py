"""The SQLite MLflow store of a sweep folder: ``mlflow.db``, built whole, and its artifacts
beside it in ``mlartifacts/``."""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.database_urls import sqlite_file

ARTIFACTS = "mlartifacts"


def default_artifact_location(out_dir: Path) -> str:
    return (Path(out_dir).resolve() / ARTIFACTS).as_uri()


def create_sqlite_store(uri: str, artifact_root: str | None = None) -> None:
    """Create a new SQLite tracking store whole, or not at all.

    MLflow builds a new store's schema with dozens of migrations that SQLite cannot roll back
    as one: a process killed among them leaves a store no later run can open (``table
    _alembic_tmp_experiments already exists``). Built under a temporary name and renamed, a
    kill at any moment leaves no store (the next run builds it) or a whole one. Does nothing
    if the file exists; a file lock keeps two processes from building it at once.
    """
    path = sqlite_file(uri)
    if path is None or path.exists():
        return
    from filelock import FileLock
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():  # built by another process while we waited
            return
        for orphan in path.parent.glob(f".{path.name}.tmp-*"):  # a builder that was killed
            orphan.unlink()
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        root = artifact_root or default_artifact_location(path.parent)
        store = SqlAlchemyStore(f"sqlite:///{tmp}", root)
        store.engine.dispose()  # no connection may outlive the rename
        os.replace(tmp, path)
