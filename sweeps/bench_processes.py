"""``bench``'s worker processes: K downstream cells trained at once, each by ``fit`` in a
process of its own on the same device, as ``sweep.workers`` runs a grid's cells.

The bench's other two ways to train K cells are one after another and as one batched
ensemble (``downstream.ensemble``); which of the ensemble and the processes keeps a GPU
busier decides the presets' ``sweep.ensemble`` and ``sweep.workers``. The processes are
fresh interpreters (``spawn``, as the sweep's helpers are), each with its share of the CPU
threads (``threads_per_worker``). Each warms up (imports, CUDA context, kernels) before a
barrier that all pass together; the figure is the time from there to the last one's end,
what a sweep that runs for hours pays per cell once its workers have started.
"""

from __future__ import annotations

import queue as queues
import time
from dataclasses import dataclass

import torch
import torch.multiprocessing as mp

from benchmark.config import Config
from benchmark.data.records import EchoData
from benchmark.downstream_config import TrainConfig
from benchmark.grid import Task
from downstream.registry import build_model, build_task
from downstream.training import fit
from sweeps.bench_measure import sync
from sweeps.workers import threads_per_worker

TASK = Task.SEG
# Seconds a worker may take to start and warm up, and the others wait for it at the barrier.
START_TIMEOUT = 600


def cell_model(cfg: Config, seed: int) -> torch.nn.Module:
    """The bench cell's fresh model for ``seed``, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(TASK, cfg.downstream, cfg.data.size)


@dataclass
class CellRun:
    """What one worker trains: the cell of ``seed`` on ``train``, warmed up on ``warm``."""

    cfg: Config
    train: EchoData
    val: EchoData
    train_cfg: TrainConfig
    warm: EchoData
    warm_cfg: TrainConfig
    device: str
    channels_last: bool  # fit's speed options, as the bench's own cell takes them
    fused: bool


def train_in_processes(run: CellRun, seeds: list[int]) -> dict:
    """Train the cell of each of ``seeds`` in a process of its own, all at once; returns
    ``seconds`` (barrier to the last end), ``threads_per_worker`` and the
    members' validation scores (``val_scores``, in ``seeds``' order). A worker that fails
    raises here with its exit code."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(seeds)), ctx.Queue()
    threads = threads_per_worker(len(seeds))
    procs = [
        ctx.Process(
            target=_worker,
            args=(run, seed, threads, barrier, results),
            name=f"bench-worker-{seed}",
        )
        for seed in seeds
    ]
    for proc in procs:
        proc.start()
    finished = {}
    try:
        while len(finished) < len(seeds):
            try:
                seed, started, ended, scores = results.get(timeout=1)
                finished[seed] = (started, ended, scores)
            except queues.Empty:
                failed = [p for p in procs if p.exitcode not in (None, 0)]
                if failed:
                    codes = {p.name: p.exitcode for p in failed}
                    raise RuntimeError(f"bench worker processes failed: {codes}") from None
    finally:
        for proc in procs:
            if proc.is_alive() and len(finished) < len(seeds):
                proc.terminate()
            proc.join()
    starts, ends = zip(*((s, e) for s, e, _ in finished.values()))
    return {
        "seconds": max(ends) - min(starts),
        "threads_per_worker": threads,
        "val_scores": [finished[s][2] for s in seeds],
    }


def _worker(run: CellRun, seed: int, threads: int, barrier, results) -> None:
    """One process: warm up, wait for the others, train the cell, report its times."""
    torch.set_num_threads(threads)
    device = torch.device(run.device)
    task, _ = build_task(TASK, run.cfg.downstream)
    fast = {"channels_last": run.channels_last, "fused": run.fused}

    def train(data: EchoData, cfg: TrainConfig) -> list[float]:
        model = cell_model(run.cfg, seed)
        return fit(model, task, data, run.val, cfg, device, seed, progress=False, **fast).val_score

    train(run.warm, run.warm_cfg)
    barrier.wait(timeout=START_TIMEOUT)
    sync(device)
    # The monotonic clock is the system's on Linux: comparable between the processes.
    started = time.monotonic()
    scores = train(run.train, run.train_cfg)
    sync(device)
    results.put((seed, started, time.monotonic(), scores))
