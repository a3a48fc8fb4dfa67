"""The one training loop shared by every downstream task and protocol.

AdamW (or SGD with momentum), a cosine, constant, poly or plateau learning-rate schedule
(``downstream.train``; each task may have its own), autocast on GPU, per-epoch
validation on the task's primary metric (higher is better), early stopping, and the
best-validation weights kept. An epoch is one pass over the training set, or, with
``downstream.train.steps_per_epoch``, that many optimiser steps whatever the set's size, so
that every cell of a comparison gets the same number of updates.
Every call starts from a fresh optimiser, scheduler and early-stopping state: that is what
makes ``pretrain`` a real fine-tune rather than a resumed run (SB's mistake).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from benchmark import faults
from benchmark.data.records import EchoData
from benchmark.downstream_config import TrainConfig
from benchmark.runtime import autocast, autocast_dtype, grad_scaler

# Numbers every optimiser a fit creates, so that tests can tell two apart: id() cannot,
# since a freed optimiser's address is reused by the next one.
OPTIMISER_SERIAL = itertools.count(1)


class Task(Protocol):
    """What the loop needs from a downstream task."""

    primary_metric: str

    def loader(
        self,
        data: EchoData,
        batch_size: int,
        train: bool,
        seed: int,
        device: torch.device | None = None,
    ) -> torch.utils.data.DataLoader:
        """Batches of ``data``; with ``device``, collated on it (augmentation runs there)."""

    def loss(self, model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor: ...

    def validate(self, model: torch.nn.Module, data: EchoData, device: torch.device) -> float: ...

    # Optional: ``validation(model, val, device) -> (score, selection)``, the validation
    # score (the curve) and the score early stopping and the best checkpoint follow (higher
    # is better), from one pass; see ``validation_scores``.


def validation_scores(
    task: Task, model: torch.nn.Module, val: EchoData, device: torch.device, desc: str
) -> tuple[float, float]:
    """``(score, selection)``: the task's ``validation`` where it has one, else its
    ``validate`` score twice; both checked finite."""
    both = getattr(task, "validation", None)
    if both is not None:
        score, chosen = both(model, val, device)
    else:
        score = chosen = task.validate(model, val, device)
    score = check_score(desc, task.primary_metric, score)
    return score, check_score(desc, "selection score", chosen)


class BatchStream:
    """A training loader's batches, one epoch at a time.

    ``steps`` 0: each epoch is one pass over the loader. Otherwise each epoch is exactly
    ``steps`` full batches, continuing where the previous epoch stopped and starting a new
    pass (reshuffled by the loader) whenever one runs out. A pass's last, partial batch is
    left out (as ``drop_last`` would), so that every step sees ``min(batch_size, n)``
    images and every cell of a comparison trains on the same number; the reshuffle leaves
    out other images each pass.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, steps: int = 0):
        self.loader, self.steps = loader, steps
        self._per_pass = _full_batches(loader) if steps else 0
        self._pass: Iterator[dict] | None = None
        self._taken = 0

    def epoch(self) -> Iterator[dict]:
        if not self.steps:
            yield from self.loader
            return
        for _ in range(self.steps):
            if self._pass is None or self._taken == self._per_pass:
                self._pass, self._taken = iter(self.loader), 0
            self._taken += 1
            yield next(self._pass)


def _full_batches(loader: torch.utils.data.DataLoader) -> int:
    """The full batches of one pass: ``len(dataset) // batch_size`` of a DataLoader (at least
    one), every batch of any other sized iterable of batches (a task's own loader)."""
    dataset, size = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
    if dataset is None or not size:
        return len(loader)
    return max(len(dataset) // size, 1)


def build_optimizer(
    params: Iterable[torch.Tensor], cfg: TrainConfig, fused: bool = False
) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params``: AdamW (decoupled weight decay), or SGD with
    ``cfg.momentum`` (optionally Nesterov) and L2 weight decay. ``fused``: torch's fused
    kernel (CUDA). Both update every element on its own, which the ensemble relies on."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            fused=fused or None,
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    """The learning-rate schedule of ``cfg.scheduler``, stepped once per epoch by
    :func:`step_schedule`."""
    sched = torch.optim.lr_scheduler
    if cfg.scheduler == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "poly":  # nnU-Net's: reaches 0 after the last epoch
        return sched.LambdaLR(optimizer, lambda epoch: max(1 - epoch / cfg.epochs, 0.0) ** 0.9)
    if cfg.scheduler == "plateau":
        # On the selection score (higher is better), improved when above the best, as early
        # stopping judges it: torch's default relative threshold counts an equal negative
        # score (cls selects on minus the loss) as better, and would never lower the rate.
        return sched.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
            threshold=0.0,
            threshold_mode="abs",
        )
    return sched.LambdaLR(optimizer, lambda _: 1.0)


def step_schedule(schedule: Any, selection: float) -> None:
    """End an epoch of ``schedule``; ``selection`` is the epoch's validation selection
    score, which only the plateau schedule reads."""
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        schedule.step(selection)
    else:
        schedule.step()


@dataclass
class FitResult:
    model: torch.nn.Module  # holds the best-validation weights
    train_loss: list[float] = field(default_factory=list)  # mean loss per epoch
    val_score: list[float] = field(default_factory=list)  # primary metric per epoch
    epoch_seconds: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate of each epoch's steps
    best_epoch: int = 0
    steps: int = 0  # optimiser steps taken, all epochs together
    optimizer_id: int = 0  # serial of this fit's optimiser; tests check pretrain makes a new one

    @property
    def best_score(self) -> float:
        return self.val_score[self.best_epoch - 1] if self.best_epoch else float("nan")


def check_epoch_loss(
    desc: str, epoch: int, loss: float, initial: float | None, factor: float
) -> None:
    """Raise ``FloatingPointError`` if an epoch's mean ``loss`` is not finite, or has grown
    past ``factor`` times ``initial`` (the untrained model's first loss): the model diverged,
    and its score would be a broken model's."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"{desc}: loss became {loss} in epoch {epoch}")
    if initial and loss > factor * initial:
        raise FloatingPointError(
            f"{desc}: diverged in epoch {epoch}: mean loss {loss:.4g} is over "
            f"{factor:g}x the initial {initial:.4g}"
        )


def check_score(desc: str, metric: str, score: float) -> float:
    """``score``, or ``FloatingPointError`` if the validation metric is not finite."""
    if not math.isfinite(score):
        raise FloatingPointError(f"{desc}: validation {metric} is {score}")
    return score


def fit(
    model: torch.nn.Module,
    task: Task,
    train: EchoData,
    val: EchoData,
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    desc: str = "train",
    progress: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
    channels_last: bool | None = None,
    fused: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``train``, early-stopping on ``val``; returns the best model.

    ``on_epoch(epoch, val_score)`` is called after each validation; an exception it raises
    (a tuning trial's ``optuna.TrialPruned``) stops training and propagates.
    Speed options (``None``: on for CUDA, off elsewhere): ``channels_last`` stores the
    model's 4-D weights as NHWC, which convolutions then run in (tensor-core friendly on
    GPU); ``fused`` uses torch's fused optimiser kernel.
    """
    if len(train) == 0:
        raise ValueError(f"{desc}: no training images")
    on_gpu = device.type == "cuda"
    channels_last = on_gpu if channels_last is None else channels_last
    fused = on_gpu if fused is None else fused
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), cfg, fused)
    schedule = build_schedule(optimizer, cfg)
    dtype = autocast_dtype(cfg.precision, device)
    scaler = grad_scaler(dtype, device)
    result = FitResult(model=model, optimizer_id=next(OPTIMISER_SERIAL))
    best_state = copy.deepcopy(model.state_dict())
    best = -math.inf
    since_best = 0
    initial_loss: float | None = None
    loader = task.loader(train, cfg.batch_size, train=True, seed=seed, device=device)
    batches = BatchStream(loader, cfg.steps_per_epoch)
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        started = time.time()
        result.lr.append(optimizer.param_groups[0]["lr"])
        model.train()
        # The epoch's loss is summed on the device and read once per epoch: reading it every
        # step would wait for the device each step. A non-finite step loss makes the sum
        # non-finite, which check_epoch_loss reports for the epoch.
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        for batch in batches.epoch():
            # Autocast on GPU only (downstream.train.precision): CPU runs stay in float32.
            with autocast(dtype, device):
                loss = task.loss(model, batch, device)
            if faults.poisoned("train.loss"):  # the reliability suite's diverged model
                loss = loss * float("nan")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            result.steps += 1
            n = len(next(iter(batch.values())))
            if initial_loss is None:  # the untrained model's loss: the divergence baseline
                initial_loss = loss.item()
                if not math.isfinite(initial_loss):
                    raise FloatingPointError(f"{desc}: loss became {initial_loss} in epoch 1")
            total += loss.detach().double() * n
            count += n
        epoch_loss = total.item() / max(count, 1)
        check_epoch_loss(desc, epoch, epoch_loss, initial_loss, cfg.divergence_factor)
        score, key = validation_scores(task, model, val, device, desc)
        step_schedule(schedule, key)
        result.train_loss.append(epoch_loss)
        result.val_score.append(score)
        result.epoch_seconds.append(time.time() - started)
        bar.set_postfix(loss=f"{result.train_loss[-1]:.3f}", val=f"{score:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, score)
        if key > best:
            best, since_best, result.best_epoch = key, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return result
