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


class FakeRanks:
    """A rank of a multi-process launch without a process group: the main one records what
    it broadcasts, another one is handed what the main one would have sent."""

    def __init__(self, index: int, incoming=()) -> None:
        self.index, self.count = index, 2
        self.is_main = index == 0
        self.sent: list = []
        self.incoming = list(incoming)

    def broadcast(self, obj=None):
        if self.is_main:
            self.sent.append(obj)
            return obj
        return self.incoming.pop(0)


def _writer(calls):
    def compute(folder):
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"w")
        return {"steps": 4}

    return compute


@pytest.mark.parametrize("collective", [False, True])
def test_the_main_rank_decides_computes_and_broadcasts(tmp_path, collective):
    calls = []
    ranks = FakeRanks(0)
    store = StageStore(tmp_path, ranks=ranks)
    stage = store.get_or_compute("gen", {"a": 1}, _writer(calls), collective=collective)
    assert stage.computed and len(calls) == 1 and (stage.path / "weights.bin").exists()
    # A collective stage is announced under its lock, so the others train with it.
    assert ranks.sent == [("compute", None)] * collective + [("stage", stage)]
    ranks.sent.clear()
    again = store.get_or_compute("gen", {"a": 1}, _writer(calls), collective=collective)
    assert not again.computed and len(calls) == 1 and ranks.sent == [("stage", again)]


def test_another_rank_takes_part_in_a_collective_stage_and_writes_nothing(tmp_path):
    done = StageStore(tmp_path / "main").get_or_compute("gen", {"a": 1}, lambda f: None)
    calls = []
    ranks = FakeRanks(1, [("compute", None), ("stage", done)])
    store = StageStore(tmp_path / "other", ranks=ranks)
    assert store.get_or_compute("gen", {"a": 1}, _writer(calls), collective=True) is done
    assert len(calls) == 1 and not calls[0].exists()  # a scratch folder, deleted
    assert tmp_path / "other" not in calls[0].parents and not (tmp_path / "other").exists()
    # A stage that exists, or one that is not collective: the main one's answer, no work.
    ranks.incoming = [("stage", done)]
    assert store.get_or_compute("gen", {"a": 1}, _writer(calls), collective=True) is done
    assert len(calls) == 1 and not ranks.incoming


def test_another_rank_fails_with_the_main_ranks_error(tmp_path):
    store = StageStore(tmp_path, ranks=FakeRanks(1, [("error", "StaleStageError: stale")]))
    with pytest.raises(RuntimeError, match="main process failed: StaleStageError: stale"):
        store.get_or_compute("data", {"v": 1}, _writer([]))
    assert not tmp_path.exists() or not any(tmp_path.rglob("weights.bin"))


def test_the_main_rank_broadcasts_its_error_to_the_waiting_ranks(tmp_path):
    stage = StageStore(tmp_path).get_or_compute("data", {"v": 1}, lambda f: None)
    (stage.path / "done.json").unlink()
    ranks = FakeRanks(0)
    with pytest.raises(StaleStageError):
        StageStore(tmp_path, ranks=ranks).get_or_compute("data", {"v": 1}, _writer([]))
    assert ranks.sent[0][0] == "error" and "damaged" in ranks.sent[0][1]
    # After a collective compute that returned, the others wait for the stage: told too.
    ranks = FakeRanks(0)

    def unwritable(folder):
        (folder / "config.yaml").mkdir()  # resolved_config cannot be written over it

    with pytest.raises(OSError):
        StageStore(tmp_path, ranks=ranks).get_or_compute(
            "gen", {"g": 1}, unwritable, resolved_config="a: 1\n", collective=True
        )
    assert [m[0] for m in ranks.sent] == ["compute", "error"]


def test_a_collective_compute_that_raises_sends_nothing_more(tmp_path):
    """The others may be inside one of its collectives: the launcher ends them."""
    ranks = FakeRanks(0)

    def diverged(folder):
        raise FloatingPointError("generator loss became nan at step 3")

    with pytest.raises(FloatingPointError):
        StageStore(tmp_path, ranks=ranks).get_or_compute("gen", {"g": 1}, diverged, collective=True)
    assert ranks.sent == [("compute", None)]
