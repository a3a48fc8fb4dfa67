import shutil
from pathlib import Path

import pytest

from benchmark.database_urls import is_database_url, sqlite_file, with_driver
from benchmark.redact import mask_uri
from benchmark.tracking import Tracker, artifact_location_for, flatten, relocate_experiment


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d": "x",
    }


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("postgresql://user:s3cret@host/db", "postgresql://user:***@host/db"),
        ("postgresql://bob:s3cr@t@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("mysql://u:p@h/db?password=q&x=1", "mysql://u:***@h/db?password=***&x=1"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
        ("http://host/api?token=abc&x=1", "http://host/api?token=***&x=1"),
        (None, None),
    ],
)
def test_mask_uri(uri, masked):
    assert mask_uri(uri) == masked


def test_runs_curves_and_lookup(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp", (tmp_path / "art").as_uri())
    parent = tracker.start_run("sweep", {"kind": "sweep"})
    run = tracker.start_run("c1", {"kind": "cell", "cell_key": "k1"}, parent)
    tracker.log_params(run, {"data": {"size": 32}})
    # 1,500 points: more than one MLflow batch; the NaN is dropped
    tracker.log_curves(run, {"val/dice": [i / 1500 for i in range(1500)], "bad": [float("nan")]})
    tracker.log_metrics(run, {"test/dice": 0.5})
    tracker.log_text(run, "x", "note.txt")
    tracker.end_run(run)
    unfinished = tracker.start_run("c2", {"kind": "cell", "cell_key": "k2"}, parent)
    assert tracker.finished_runs("cell", "cell_key") == {"k1": run}
    history = tracker.client.get_metric_history(run, "val/dice")
    assert len(history) == 1500 and sorted(m.step for m in history)[:2] == [1, 2]
    data = tracker.client.get_run(run).data
    assert data.params["data.size"] == "32" and "bad" not in data.metrics
    assert data.tags["mlflow.parentRunId"] == parent
    assert tracker.client.get_run(unfinished).info.status == "RUNNING"
    assert (tmp_path / "art").is_dir()  # artifacts beside the store, not in ./mlruns


def test_artifacts_go_beside_the_sqlite_file_not_to_the_current_folder(tmp_path, monkeypatch):
    # MLflow's own default for a SQLite store is ./mlruns of whatever folder the process runs
    # in: a test or a notebook would litter the repository with it.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    tracker = Tracker(f"sqlite:///{tmp_path / 'store' / 'm.db'}", "exp")
    run = tracker.start_run("sweep", {"kind": "sweep"})
    tracker.log_text(run, "x", "config.yaml")
    tracker.end_run(run)
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    assert not (cwd / "mlruns").exists()
    [artifact] = tracker.client.list_artifacts(run)
    assert artifact.path == "config.yaml"


@pytest.mark.parametrize(
    ("uri", "database"),
    [
        ("sqlite:////tmp/m.db", True),
        ("postgresql://u:p@h/db", True),
        ("postgresql+psycopg2://h/db", True),
        ("postgres://h/db", True),
        ("mysql+pymysql://h/db", True),
        ("mssql://h/db", True),
        ("http://127.0.0.1:5000", False),
        ("https://mlflow.example.org", False),
        ("databricks", False),
        ("file:///tmp/mlruns", False),
    ],
)
def test_database_stores_keep_artifacts_in_the_output_folder(uri, database, tmp_path):
    assert is_database_url(uri) is database
    expected = (tmp_path / "mlartifacts").as_uri() if database else None
    assert artifact_location_for(uri, tmp_path) == expected  # a server decides for itself


def test_with_driver_names_the_installed_postgresql_driver():
    import importlib.util

    assert with_driver("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"
    assert with_driver("http://h:5000") == "http://h:5000"
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the postgres extra has psycopg2.
    psycopg3 = importlib.util.find_spec("psycopg") is not None
    want = "postgresql://u:p@h/db" if psycopg3 else "postgresql+psycopg2://u:p@h/db"
    assert with_driver("postgresql://u:p@h/db") == want
    assert with_driver("postgres://u:p@h/db") == want


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////runs/a b.db", "/runs/a b.db"),
        ("sqlite:////runs/a%20b.db", "/runs/a b.db"),  # SQLAlchemy decodes it
        ("sqlite:///runs/m.db?password=x", "runs/m.db"),
        ("sqlite+pysqlite:////runs/m.db", "/runs/m.db"),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("postgresql://h/db", None),
    ],
)
def test_sqlite_file_is_the_file_sqlalchemy_opens(url, path):
    import sqlalchemy

    assert sqlite_file(url) == (Path(path) if path else None)
    if path:
        assert sqlalchemy.engine.make_url(url).database == path


def _logged_run(tracker: Tracker) -> str:
    run = tracker.start_run("c1", {"kind": "cell", "cell_key": "k1"})
    tracker.log_text(run, "x", "per_sample.csv")
    tracker.end_run(run)
    return run


def test_a_moved_store_is_repointed_at_the_artifacts_beside_it(tmp_path, caplog):
    """A sweep folder moved (or copied off another machine): MLflow's absolute artifact
    locations name the old folder, which is gone."""
    made, moved = tmp_path / "gpu" / "smoke", tmp_path / "laptop" / "smoke"
    old_run = _logged_run(Tracker(f"sqlite:///{made / 'mlflow.db'}", "smoke"))
    moved.parent.mkdir()
    shutil.move(made, moved)

    tracker = Tracker(f"sqlite:///{moved / 'mlflow.db'}", "smoke")
    assert "re-pointed from" in caplog.text
    assert [a.path for a in tracker.client.list_artifacts(old_run)] == ["per_sample.csv"]
    new_run = _logged_run(tracker)
    assert (moved / "mlartifacts" / new_run / "artifacts" / "per_sample.csv").is_file()
    assert not made.exists()  # nothing written where the folder was
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (moved / "mlartifacts").as_uri()


def test_a_copied_store_whose_original_exists_is_left_alone(tmp_path):
    original, copy = tmp_path / "a", tmp_path / "b"
    _logged_run(Tracker(f"sqlite:///{original / 'mlflow.db'}", "smoke"))
    shutil.copytree(original, copy)
    tracker = Tracker(f"sqlite:///{copy / 'mlflow.db'}", "smoke")
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (original / "mlartifacts").as_uri()  # someone's: kept


def test_relocating_a_missing_experiment_creates_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "other")
    relocate_experiment(uri, "smoke", (tmp_path / "mlartifacts").as_uri())
    assert MlflowClient(uri).get_experiment_by_name("smoke") is None
