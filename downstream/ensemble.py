"""Several small downstream trainings on one device at once: a batched model ensemble.

K cells whose models share one architecture and whose training sets have the same size
(the seeds of a cell, or cells of one task, ratio, protocol and real fraction) are trained
together. Their parameters are stacked with ``torch.func.stack_module_state`` and the K
forward passes run as one ``vmap``-ed ``functional_call``: a GPU that a single small U-Net
leaves mostly idle runs K of them in the same kernels.

Each member gets what :func:`downstream.training.fit` gives it, up to the float rounding of
the batched kernels: its own seeded loader (order and augmentation), a fresh optimiser (one
AdamW or SGD over the stacked tensors is exactly K of them, both being elementwise), the
same learning-rate schedule (any but plateau, which follows each member's own validation
score), its own validation, early stopping and best weights. The loss of
the ensemble is the sum of the members' losses, so each member's gradient is its own.

The task's own ``loss`` is reused unchanged: it is called once per member with a stand-in
model that captures the inputs it builds (e.g. images ``(B, 1, H, W)``), the K inputs are
stacked to ``(K, B, ...)`` for one batched forward, and ``loss`` is called again per member
with a stand-in that returns that member's slice of the output.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from benchmark.data.records import EchoData
from benchmark.downstream_config import TrainConfig
from benchmark.runtime import autocast, autocast_dtype, grad_scaler
from downstream.training import (
    OPTIMISER_SERIAL,
    BatchStream,
    FitResult,
    Task,
    build_optimizer,
    build_schedule,
    check_epoch_loss,
    validation_scores,
)


class _Captured(Exception):
    """Raised by :class:`_Capture` to hand back the inputs a task gives its model."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        super().__init__("captured model inputs")
        self.args, self.kwargs = args, kwargs


class _Capture(nn.Module):
    """Stands in for the model while ``task.loss`` prepares its inputs; stops it there."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(args, kwargs)


class _Replay(nn.Module):
    """Stands in for the model while ``task.loss`` computes its loss: returns one member's
    slice of the ensemble's output for the inputs captured before."""

    def __init__(self, output: Any, shapes: list[torch.Size]) -> None:
        super().__init__()
        self.output, self.shapes, self.calls = output, shapes, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        shapes = [a.shape for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if self.calls > 1 or shapes != self.shapes:
            raise RuntimeError("the task's loss must call its model once, with the same inputs")
        return self.output


def _model_inputs(task: Task, batch: dict, device: torch.device) -> tuple[tuple, dict]:
    """The ``(args, kwargs)`` that ``task.loss`` passes to its model for ``batch``."""
    try:
        task.loss(_Capture(), batch, device)
    except _Captured as captured:
        return captured.args, captured.kwargs
    raise RuntimeError("the task's loss did not call its model")


def _stack(values: list[Any], what: str) -> Any:
    """Stack one input across members: tensors -> ``(K, ...)``; anything else must agree."""
    if all(isinstance(v, torch.Tensor) for v in values):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"ensemble members got {what} of different shapes {sorted(shapes)}")
        return torch.stack(values)
    if any(v != values[0] for v in values[1:]):
        raise ValueError(f"ensemble members got different non-tensor {what}")
    return values[0]


def _prefetched(iterators: list[Iterator], pool: ThreadPoolExecutor | None) -> Iterator[list]:
    """Yield the next batch of every iterator together until one is exhausted.

    With a pool, the members' next batches are prepared in threads (one per loader, so each
    loader's order and augmentation draws stay its own) while the device runs this step.
    """
    done = object()

    def fetch(it: Iterator) -> Any:
        return next(it, done)

    if pool is None:
        while True:
            items = [fetch(it) for it in iterators]
            if any(item is done for item in items):
                return
            yield items
    pending: list[Future] = [pool.submit(fetch, it) for it in iterators]
    while True:
        items = [f.result() for f in pending]
        if any(item is done for item in items):
            return
        pending = [pool.submit(fetch, it) for it in iterators]
        yield items


def _check_members(
    models: Sequence[nn.Module], trains: Sequence[EchoData], cfg: TrainConfig
) -> None:
    signature = [(k, v.shape) for k, v in models[0].state_dict().items()]
    for i, model in enumerate(models[1:], start=1):
        if [(k, v.shape) for k, v in model.state_dict().items()] != signature:
            raise ValueError(f"ensemble member {i} has another architecture than member 0")
    for model in models:
        for module in model.modules():
            # Running statistics are buffers updated in place: they cannot be stacked.
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                raise ValueError(
                    f"{type(module).__name__} with running statistics cannot be trained in an "
                    "ensemble; train these cells one at a time"
                )
    if cfg.scheduler == "plateau":
        # One optimiser steps every member at one learning rate, which a plateau schedule
        # would lower for all when one member stalls.
        raise ValueError(
            "a plateau schedule follows each member's own validation score; train these "
            "cells one at a time"
        )
    sizes = {len(t) for t in trains}
    if 0 in sizes:
        raise ValueError("ensemble: no training images")
    # Every member must take the same steps of batches of one size, as each would alone:
    # by passes that needs sets of one size; with a step budget (full batches only) any
    # sizes of at least one batch.
    budget = cfg.steps_per_epoch > 0 and min(sizes) >= cfg.batch_size
    if len(sizes) > 1 and not budget:
        raise ValueError(
            "ensemble members need training sets of one size, or, with "
            "downstream.train.steps_per_epoch, of one batch or more each; "
            f"got {sorted(sizes)} (batch size {cfg.batch_size})"
        )


def fit_ensemble(
    models: Sequence[nn.Module],
    task: Task,
    trains: Sequence[EchoData],
    vals: Sequence[EchoData],
    cfg: TrainConfig,
    device: torch.device,
    seeds: Sequence[int],
    desc: str = "ensemble",
    progress: bool = True,
    fused: bool = False,
    prefetch: bool = True,
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> list[FitResult]:
    """Train ``models[k]`` on ``trains[k]`` (seed ``seeds[k]``), early-stopping each on
    ``vals[k]``, all K at once; returns one :class:`FitResult` per member, each model
    holding its best-validation weights.

    Autocast and loss scaling on CUDA follow ``cfg.precision`` (as ``fit`` does); ``fused``:
    torch's fused optimiser kernel;
    ``prefetch``: prepare the next batches in threads. ``epoch_seconds`` of every member is
    the wall time of the shared epoch. A non-finite loss is detected once per epoch (one
    device sync per epoch, not per step). ``on_epoch(epoch, scores)`` gets the scores of the
    members still training.
    """
    if not len(models) == len(trains) == len(vals) == len(seeds) > 0:
        raise ValueError("fit_ensemble needs one model, training set, val set and seed each")
    _check_members(models, trains, cfg)
    n_members = len(models)
    models = [m.to(device) for m in models]
    # The architecture without storage: functional_call runs it with each member's tensors.
    base = copy.deepcopy(models[0]).to("meta")
    params, buffers = stack_module_state(list(models))
    optimizer = build_optimizer(list(params.values()), cfg, fused)
    schedule = build_schedule(optimizer, cfg)  # one for all: never plateau (_check_members)

    def member_forward(p: dict, b: dict, args: tuple, kwargs: dict) -> Any:
        return functional_call(base, (p, b), args, kwargs)

    # Dropout draws differ per member ("different"), as K separate runs would draw.
    batched_forward = vmap(member_forward, randomness="different")
    dtype = autocast_dtype(cfg.precision, device)
    scaler = grad_scaler(dtype, device)
    serial = next(OPTIMISER_SERIAL)  # one optimiser steps every member
    results = [FitResult(model=m, optimizer_id=serial) for m in models]
    best_states = [copy.deepcopy(m.state_dict()) for m in models]
    best = [-math.inf] * n_members
    since_best = [0] * n_members
    active = [True] * n_members
    initial: list[float] | None = None
    streams = [
        BatchStream(
            task.loader(t, cfg.batch_size, train=True, seed=s, device=device), cfg.steps_per_epoch
        )
        for t, s in zip(trains, seeds)
    ]
    pool = ThreadPoolExecutor(max_workers=n_members) if prefetch else None
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress, leave=False)
    try:
        for epoch in bar:
            started = time.time()
            lr = optimizer.param_groups[0]["lr"]  # every member's: one schedule
            base.train()
            totals = torch.zeros(n_members, device=device)
            count = epoch_steps = 0
            for batches in _prefetched([stream.epoch() for stream in streams], pool):
                inputs = [_model_inputs(task, b, device) for b in batches]
                n_args = len(inputs[0][0])
                args = tuple(_stack([i[0][j] for i in inputs], "inputs") for j in range(n_args))
                kwargs = {k: _stack([i[1][k] for i in inputs], k) for k in inputs[0][1]}
                with autocast(dtype, device):
                    outputs = batched_forward(params, buffers, args, kwargs)  # (K, B, ...)
                    if not isinstance(outputs, torch.Tensor):
                        raise TypeError("ensemble members must return one tensor")
                    losses = []
                    for k, (batch, (k_args, k_kwargs)) in enumerate(zip(batches, inputs)):
                        shapes = [
                            a.shape
                            for a in (*k_args, *k_kwargs.values())
                            if isinstance(a, torch.Tensor)
                        ]
                        replay = _Replay(outputs[k], shapes)
                        losses.append(task.loss(replay, batch, device).float())
                losses = torch.stack(losses)
                if initial is None:  # the untrained models' losses: the divergence baselines
                    initial = losses.detach().tolist()
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses.sum()).backward()
                scaler.step(optimizer)
                scaler.update()
                epoch_steps += 1
                n = len(next(iter(batches[0].values())))
                totals += losses.detach() * n
                count += n
            schedule.step()  # every member's epoch ends together
            epoch_losses = (totals / max(count, 1)).tolist()  # the epoch's one sync
            scores = []
            for k in range(n_members):
                if not active[k]:
                    continue
                result = results[k]
                result.steps += epoch_steps  # a stopped member's later steps are not its own
                # fit's checks, per member: a non-finite or diverged loss fails the cell.
                member = f"{desc}: member {k}"
                check_epoch_loss(member, epoch, epoch_losses[k], initial[k], cfg.divergence_factor)
                with torch.no_grad():  # the member's current weights into its own module
                    for name, p in models[k].named_parameters():
                        p.copy_(params[name][k])
                score, key = validation_scores(task, models[k], vals[k], device, member)
                scores.append(score)
                result.train_loss.append(epoch_losses[k])
                result.val_score.append(score)
                result.lr.append(lr)
                if key > best[k]:
                    best[k], since_best[k], result.best_epoch = key, 0, epoch
                    best_states[k] = copy.deepcopy(models[k].state_dict())
                else:
                    since_best[k] += 1
                    # A stopped member keeps being stepped with the others (its slice is
                    # never read again): its curves and best weights are final.
                    active[k] = since_best[k] < cfg.patience
            elapsed = time.time() - started
            for result in results:
                if len(result.epoch_seconds) < len(result.val_score):
                    result.epoch_seconds.append(elapsed)
            bar.set_postfix(active=sum(active))
            if on_epoch is not None:
                on_epoch(epoch, scores)
            if not any(active):
                break
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    for model, state in zip(models, best_states):
        model.load_state_dict(state)
    return results
