"""Helpers of the fault-injection tests: sweeps in real child processes, killed for real.

Every sweep runs as its own process, as a user's does, but forked from a server that has
already imported the project (``multiprocessing``'s forkserver with a preload): a kill and
its resume then cost the sweep's own work, not half a minute of imports each. The child
runs the CLI's ``main`` with its own environment (``ECHOSYNTH_FAULT`` names the point
where it SIGKILLs itself) and its output in a log file.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sweeps"))  # the distributed-sweep tests' helpers

from sweeps_support import SHRINK, SMOKE_KEYS  # noqa: E402

# Smaller still than the sweeps tests' smoke grid: every stage still runs.
FAULT_SHRINK = [*SHRINK, "fidelity.encoder_steps=5"]
_PRELOAD = ["benchmark.__main__", "sweeps.grid", "sweeps.sync", "reports.report", "mlflow"]
_ctx = multiprocessing.get_context("forkserver")
_ctx.set_forkserver_preload(_PRELOAD)


def sweep_argv(out: Path, *args: str) -> list[str]:
    sets = [x for s in FAULT_SHRINK for x in ("--set", s)]
    return ["sweep", "--config", "smoke", "--out", str(out), "--json", "--quiet", *sets, *args]


def _child(argv: list[str], env: dict[str, str], log: str) -> None:
    os.environ.update(env)
    import torch

    torch.set_num_threads(1)  # two sweeps share the two cores of a CI machine
    with open(log, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        from benchmark.__main__ import main

        try:
            code = main(argv)
        except BaseException:  # a crash the CLI did not turn into a message: keep it
            traceback.print_exc()
            code = 1
        sink.flush()
    os._exit(code)


class Child:
    """One CLI invocation in its own process."""

    def __init__(self, argv: list[str], log: Path, fault: str | None = None, **env: str) -> None:
        env = {"HF_HUB_OFFLINE": "1", **env}
        if fault:
            env["ECHOSYNTH_FAULT"] = fault
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = _ctx.Process(target=_child, args=(argv, env, str(log)))
        self.proc.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # it ended (and was reaped) first
            os.kill(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float = 600) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.kill()
            self.proc.join()
            raise AssertionError(f"still running after {timeout} s:\n{self.output()[-3000:]}")
        return self.proc.exitcode

    def output(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""

    def summary(self) -> dict:
        """The JSON line a finished ``--json`` command printed last (stderr is mixed in)."""
        lines = [ln for ln in self.output().splitlines() if ln.startswith("{")]
        return json.loads(lines[-1])


def stage_problems(out: Path) -> list[str]:
    """Stage folders a later run could mistake for finished, and unfinished writes left."""
    from benchmark.stages import StageStore, StaleStageError

    problems = []
    store = StageStore(out)
    for kind in ("data", "gen", "synth", "fidelity", "cells"):
        try:
            store.finished(kind)
        except StaleStageError as exc:
            problems.append(str(exc))
        problems += [str(p) for p in (out / kind).glob(".*.tmp-*")]
    return problems


def tally(out: Path) -> dict:
    """What MLflow and the study hold for the smoke grid: per-kind counts, lost, duplicated.

    ``lost``: cells of the grid without a FINISHED run, without a COMPLETE trial, or whose
    logged score differs from the one in their stage folder. ``duplicated``: extra FINISHED
    runs of one cell, generator, fidelity stage or sweep, and extra COMPLETE trials.
    """
    import optuna
    from mlflow.tracking import MlflowClient

    from benchmark.stages import StageStore

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=5000)  # visible runs only
    finished = [r for r in runs if r.info.status == "FINISHED"]
    by_kind = {
        kind: Counter(r.data.tags.get(tag) for r in finished if r.data.tags.get("kind") == kind)
        for kind, tag in (("cell", "cell_key"), ("generator", "stage"), ("fidelity", "stage"))
    }
    by_kind["sweep"] = Counter(
        r.data.tags.get("sweep") for r in runs if r.data.tags["kind"] == "sweep"
    )
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{out / 'optuna.db'}")
    trials = Counter(
        t.user_attrs["cell_key"]
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    )
    store = StageStore(out)
    scores = {}
    for stage in store.finished("cells"):
        metrics = json.loads((stage.path / "metrics.json").read_text())
        scores[metrics["cell_key"]] = metrics["test"]["dice_mean"]
    lost = 0
    for key in SMOKE_KEYS:
        logged = [r for r in finished if r.data.tags.get("cell_key") == key]
        if not logged or not trials[key] or key not in scores:
            lost += 1
        elif abs(logged[0].data.metrics["test/dice_mean"] - scores[key]) > 1e-9:
            lost += 1  # the index points at a result that is not the one on disk
    gen_stages = [s.key for s in store.finished("gen")]
    # Fidelity measurements of a synthetic set have runs; the cached judges (encoder...) not.
    fid_stages = [s.key for s in store.finished("fidelity") if "synthetic" in _spec(s)]
    expected = {"generator": gen_stages, "fidelity": fid_stages, "cell": SMOKE_KEYS}
    duplicated = sum(max(0, n - 1) for c in by_kind.values() for n in c.values())
    duplicated += sum(max(0, n - 1) for n in trials.values())
    missing_runs = {kind: sorted(set(keys) - set(by_kind[kind])) for kind, keys in expected.items()}
    running = [
        (r.data.tags.get("kind"), r.info.run_name) for r in runs if r.info.status == "RUNNING"
    ]
    return {
        "lost": lost,
        "duplicated": duplicated,
        "missing_runs": {k: v for k, v in missing_runs.items() if v},
        "running": running,
        "sweep_runs": sum(by_kind["sweep"].values()),
        "trials": dict(trials),
    }


def _spec(stage) -> dict:
    return json.loads((stage.path / "spec.json").read_text())["spec"]
