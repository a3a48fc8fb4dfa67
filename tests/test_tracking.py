import pytest

from benchmark.redact import mask_uri
from benchmark.tracking import Tracker, flatten


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
