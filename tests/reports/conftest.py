"""Fixtures of the reports tests: a run folder laid out as a sweep writes it."""

import json
import os
from contextlib import contextmanager

import mlflow
import numpy as np
import pandas as pd
import pytest

from benchmark.imaging import save_grid


@contextmanager
def sqlite_experiment(folder, name):
    """An MLflow experiment ``name`` in a SQLite store in ``folder``, with its artifacts
    there too; MLflow's global tracking URI points at it inside the block and is restored
    after. Yields ``(tracking URI, experiment id)``."""
    uri = f"sqlite:///{folder}/mlflow.db"
    old_uri, old_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        # Explicit artifact root: the default would be ./mlruns under the working directory.
        yield uri, mlflow.create_experiment(name, artifact_location=(folder / "artifacts").as_uri())
    finally:
        mlflow.set_tracking_uri(old_uri)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def _fake_run_dir(root, modes=("oracle", "corrupted"), fractions=(0.1, 1.0), size=8):
    """A run folder with a real data stage, a finished synthetic stage per (mode, fraction) and
    a cell stage that used it, laid out as the sweep writes them (data/<key>/, synth/<key>/
    with samples.png, cells/seg-<mode>-r1-f<fraction>/spec.json)."""
    rng = np.random.default_rng(0)
    data = root / "data" / "phantom-abc"
    data.mkdir(parents=True)
    np.save(data / "images.npy", rng.random((20, size, size), dtype=np.float32))
    np.save(data / "masks.npy", rng.integers(0, 4, (20, size, size)).astype(np.uint8))
    pd.DataFrame({"split": ["train"] * 16 + ["test"] * 4}).to_csv(data / "manifest.csv")
    (data / "spec.json").write_text(json.dumps({"hash": "d" * 64}))
    for mode in modes:
        for rf in fractions:
            stage = root / "synth" / f"{mode}-{rf:g}"
            stage.mkdir(parents=True)
            images = rng.random((32, size, size))
            save_grid(stage / "samples.png", images, rng.integers(0, 4, images.shape))
            spec = {"mode": mode, "real_fraction": rf, "prompt": None, "data": "d" * 64}
            digest = f"{mode}-{rf:g}-hash"
            (stage / "spec.json").write_text(json.dumps({"hash": digest, "spec": spec}))
            # A cell that trained on this set, named as a cell run's `stage` tag names it.
            cell = root / "cells" / f"seg-{mode}-r1-f{rf:g}"
            cell.mkdir(parents=True)
            (cell / "spec.json").write_text(json.dumps({"spec": {"synthetic": digest}}))
            (stage / "data.json").write_text(json.dumps({"n": 32, "shape": [size, size]}))
            (stage / "done.json").write_text("{}")
    # A half-written stage (no done.json) and a temporary folder are not finished sets.
    (root / "synth" / "oracle-partial").mkdir()
    (root / "synth" / ".oracle-x.tmp-1").mkdir()
    return root


@pytest.fixture(scope="session")
def fake_run_dir():
    """`fake_run_dir(root, modes=..., fractions=..., size=...)` -> root, filled."""
    return _fake_run_dir
