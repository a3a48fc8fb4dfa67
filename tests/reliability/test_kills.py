"""SIGKILL at named points of a smoke sweep (inside stage writes, between MLflow calls,
between logging a cell and telling the queue) and at random moments; after each kill a
resume must complete with every cell logged exactly once, nothing lost, and no stage folder
that a later run could mistake for finished."""

from __future__ import annotations

import json
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_support import Child, stage_problems, sweep_argv, tally

from benchmark.stages import StageStore, StaleStageError

# (fault point, what is half-done when the process dies). "@n": the n-th time it is reached.
POSITIONS = [
    ("mlflow.sweep.params", "the parent run created, its params partly logged"),
    ("stage.data.written", "inside the dataset's stage write, before done.json"),
    ("trial.claimed", "a cell claimed from the queue, nothing run (found by its heartbeat)"),
    ("stage.cells.written", "inside the real-only cell's stage write"),
    ("stage.cells.renamed", "a cell's stage finished, nothing logged to MLflow"),
    ("stage.gen.written", "inside the generator's stage write (model saved, no done.json)"),
    ("mlflow.generator.metrics", "the generator's run half-logged"),
    ("stage.synth.written", "inside the synthetic set's stage write"),
    ("stage.fidelity.written", "inside the echo encoder's stage write"),
    ("mlflow.fidelity.started", "the fidelity run created, nothing in it"),
    ("mlflow.cell.params@2", "the second cell's run created with part of its params"),
    ("mlflow.cell.artifact@2", "midway through a cell's artifacts"),
    ("mlflow.cell.ending@3", "the last cell fully logged but its run not closed"),
    ("trial.logged@2", "a cell logged to MLflow, its trial not told"),
]
RANDOM_KILLS = 2  # plus kills at seeded random moments of a sweep
# Kills from outside the moment a file appears: inside a library's own multi-step write.
WATCHED = [("mlflow-store-building", ".mlflow.db.tmp-*")]  # MLflow migrating a new store


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _finished_stages_are_whole(out) -> list[str]:
    """Right after a kill: only folders under their final name matter (temporary ones are
    expected and never read)."""
    problems = []
    for kind in ("data", "gen", "synth", "fidelity", "cells"):
        try:
            StageStore(out).finished(kind)
        except StaleStageError as exc:
            problems.append(str(exc))
    return problems


def _kill_when(victim: Child, out, pattern: str, timeout: float = 300) -> None:
    """SIGKILL ``victim`` as soon as a file matching ``pattern`` appears in ``out``."""
    deadline = time.time() + timeout
    while time.time() < deadline and victim.proc.is_alive():
        if any(out.glob(pattern)):
            victim.kill()
            return
        time.sleep(0.02)


def _kill_and_resume(
    root, name: str, fault: str | None, delay: float | None, watch: str | None = None
) -> dict:
    out = root / _slug(name)
    victim = Child(sweep_argv(out), root / f"{_slug(name)}-killed.log", fault=fault)
    if delay is not None:
        time.sleep(delay)
        victim.kill()
    if watch is not None:
        _kill_when(victim, out, watch)
    code = victim.wait()
    if code != -signal.SIGKILL:
        return {"name": name, "error": f"not killed (exit {code})", "log": victim.output()[-2000:]}
    after_kill = _finished_stages_are_whole(out)
    resume = Child(sweep_argv(out), root / f"{_slug(name)}-resume.log")
    code = resume.wait()
    if code != 0:
        return {"name": name, "error": f"resume exit {code}", "log": resume.output()[-3000:]}
    summary = resume.summary()
    return {
        "name": name,
        "failed": summary["failed"],
        "problems": after_kill + stage_problems(out),
        **tally(out),
    }


@pytest.mark.slow  # 150 s: 17 killed sweeps and their resumes
def test_a_sweep_killed_anywhere_resumes_exactly_once(tmp_path, reliability_record):
    rng = random.Random(20261202)
    jobs = [(point, point, None) for point, _ in POSITIONS]
    jobs += [(f"random-{i}", None, rng.uniform(2.0, 20.0)) for i in range(RANDOM_KILLS)]
    jobs += [(name, None, None, pattern) for name, pattern in WATCHED]
    must_kill = {p for p, _ in POSITIONS} | {name for name, _ in WATCHED}
    # Two sweeps at a time, one per core; each job has its own output folder.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: _kill_and_resume(tmp_path, *job), jobs))

    bad = []
    for result in results:
        if (
            "error" in result
            and result["error"].startswith("not killed")
            and result["name"] not in must_kill
        ):
            continue  # a random moment after the sweep had finished: no kill to survive
        ok = (
            "error" not in result
            and not result["failed"]
            and not result["problems"]
            and result["lost"] == 0
            and result["duplicated"] == 0
            and not result["missing_runs"]
            and not result["running"]
            and result["sweep_runs"] == 1
        )
        reliability_record(
            "kill",
            position=result["name"],
            survived=ok,
            lost=result.get("lost", 0),
            duplicated=result.get("duplicated", 0),
        )
        if not ok:
            bad.append(result)
    assert not bad, json.dumps(bad, indent=1)[:6000]
    killed = [r for r in results if "error" not in r]
    assert len(killed) >= len(must_kill)  # every named point was reached, killed, survived
