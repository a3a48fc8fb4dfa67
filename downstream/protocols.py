"""How real and synthetic images are combined to train one downstream model.

- ``mix``: one training run on real ∪ synthetic.
- ``pretrain``: train on synthetic, then a fresh fine-tune on real: new optimiser,
  scheduler and early stopping; only the weights are carried over.
- ``synthetic_only``: train on synthetic, validate and test on real.

:func:`run_protocol_together` runs K cells of one protocol and training-set size at once
(their seeds, say) as one batched model ensemble.

Validation and test always use real images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from benchmark.data.records import EchoData
from benchmark.downstream_config import TrainConfig
from benchmark.grid import Protocol
from benchmark.runtime import child_seed
from downstream.ensemble import fit_ensemble
from downstream.training import FitResult, Task, fit


@dataclass
class ProtocolResult:
    final: FitResult  # the run whose model is tested and whose curve measures convergence
    pretrain: FitResult | None = None  # the synthetic pretraining run of ``pretrain``


# The fine-tune's seed is a stream of the cell's seed (``child_seed`` key): not the seed
# itself, whose batches the pretraining drew, nor ``seed + 1``, whose batches the real-only
# cell of the next seed draws.
FINETUNE_STREAM = 2

# Trains members ``nets[k]`` on ``trains[k]`` with seed ``seeds[k]``, labelled ``desc``.
_Trainer = Callable[[list[EchoData], list[int], str, list[torch.nn.Module]], list[FitResult]]


def _run(
    protocol: Protocol,
    models: list[torch.nn.Module],
    real_trains: list[EchoData],
    synthetics: list[EchoData | None],
    seeds: list[int],
    train: _Trainer,
) -> list[ProtocolResult]:
    """What each protocol trains on, for one member or an ensemble: ``train`` does it."""
    has_synth = [s is not None and len(s) > 0 for s in synthetics]
    if protocol is Protocol.MIX:
        pairs = zip(real_trains, synthetics, has_synth)
        trains = [EchoData.concat([r, s]) if h else r for r, s, h in pairs]
        return [ProtocolResult(final=f) for f in train(trains, seeds, "mix", models)]
    if not all(has_synth):
        raise ValueError(f"protocol {protocol.value!r} needs synthetic images")
    if protocol is Protocol.SYNTHETIC_ONLY:
        return [ProtocolResult(final=f) for f in train(synthetics, seeds, "synthetic", models)]
    if protocol is Protocol.PRETRAIN:
        pre = train(synthetics, seeds, "pretrain", models)
        # Every fit builds a new optimiser, schedule and early-stopping state: a fresh
        # fine-tune from the pretrained weights only.
        tuned = [child_seed(s, FINETUNE_STREAM) for s in seeds]
        fine = train(real_trains, tuned, "finetune", [p.model for p in pre])
        return [ProtocolResult(final=f, pretrain=p) for f, p in zip(fine, pre)]
    raise ValueError(f"unknown protocol {protocol!r}")


def run_protocol(
    protocol: Protocol,
    model: torch.nn.Module,
    task: Task,
    real_train: EchoData,
    synthetic: EchoData | None,
    val: EchoData,
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    progress: bool = True,
) -> ProtocolResult:
    def one(trains, member_seeds, desc: str, nets) -> list[FitResult]:
        return [fit(nets[0], task, trains[0], val, cfg, device, member_seeds[0], desc, progress)]

    return _run(protocol, [model], [real_train], [synthetic], [seed], one)[0]


def run_protocol_together(
    protocol: Protocol,
    models: Sequence[torch.nn.Module],
    task: Task,
    real_trains: Sequence[EchoData],
    synthetics: Sequence[EchoData | None],
    val: EchoData,
    cfg: TrainConfig,
    device: torch.device,
    seeds: Sequence[int],
    progress: bool = True,
) -> list[ProtocolResult]:
    """:func:`run_protocol` for K cells at once, trained as one batched ensemble
    (:func:`downstream.ensemble.fit_ensemble`): member ``k`` is ``models[k]`` on
    ``real_trains[k]`` and ``synthetics[k]`` with seed ``seeds[k]``. Each member's result
    equals its own ``run_protocol`` up to float rounding; ``pretrain`` fine-tunes the K
    pretrained models together, each with a fresh optimiser state, as ``run_protocol`` does.

    Raises ``ValueError`` where an ensemble cannot train the members (training sets of
    different sizes, running statistics): the caller trains them one at a time instead.
    """
    fused = device.type == "cuda"

    def together(trains, member_seeds, desc: str, nets) -> list[FitResult]:
        vals = [val] * len(nets)
        return fit_ensemble(
            nets, task, trains, vals, cfg, device, member_seeds, desc, progress, fused=fused
        )

    return _run(protocol, list(models), list(real_trains), list(synthetics), list(seeds), together)
