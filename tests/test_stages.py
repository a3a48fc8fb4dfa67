import json
import multiprocessing as mp
import time

import pytest

from benchmark.stages import StageStore, StaleStageError, spec_hash


def test_compute_once_then_reuse(tmp_path):
    store = StageStore(tmp_path)
    calls = []

    def compute(folder):
        calls.append(folder)
        (folder / "result.txt").write_text("42")
        return {"answer": 42}

    first = store.get_or_compute("gen", {"a": 1}, compute, label="x", resolved_config="a: 1\n")
    second = store.get_or_compute("gen", {"a": 1}, compute, label="x")
    assert first.computed and not second.computed and len(calls) == 1
    assert first.path == second.path and first.path.name.startswith("x-")
    assert (first.path / "result.txt").read_text() == "42"
    assert (first.path / "config.yaml").read_text() == "a: 1\n"
    done = json.loads((first.path / "done.json").read_text())
    assert done["summary"] == {"answer": 42} and done["hash"] == spec_hash({"a": 1})
    assert store.get_or_compute("gen", {"a": 2}, compute).path != first.path


def test_exception_leaves_no_folder(tmp_path):
    store = StageStore(tmp_path)

    def broken(folder):
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.get_or_compute("cells", {"k": 1}, broken, label="c")
    assert list((tmp_path / "cells").iterdir()) == [
        p for p in (tmp_path / "cells").iterdir() if p.suffix == ".lock"
    ]
    assert store.lookup("cells", {"k": 1}, label="c") is None


def test_stale_cache_is_an_error(tmp_path):
    store = StageStore(tmp_path)
    stage = store.get_or_compute("data", {"v": 1}, lambda f: None)
    spec = json.loads((stage.path / "spec.json").read_text())
    spec["hash"] = "0" * 64  # as if written by another version of the inputs
    (stage.path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(StaleStageError, match="different configuration"):
        store.get_or_compute("data", {"v": 1}, lambda f: None)
    (stage.path / "done.json").unlink()
    with pytest.raises(StaleStageError, match="damaged"):
        store.lookup("data", {"v": 1})


def _worker(root, marker_dir, barrier):
    store = StageStore(root)

    def slow(folder):
        (marker_dir / f"computed-{mp.current_process().pid}").write_text("")
        time.sleep(0.5)
        (folder / "x").write_text("1")

    barrier.wait()
    store.get_or_compute("gen", {"shared": True}, slow)


def test_two_processes_never_compute_the_same_stage(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_worker, args=(tmp_path / "s", markers, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(list(markers.iterdir())) == 1
