"""How real and synthetic images are combined to train one downstream model.

- ``mix``: one training run on real ∪ synthetic.
- ``pretrain``: train on synthetic, then a fresh fine-tune on real: new optimiser,
  scheduler and early stopping; only the weights are carried over.
- ``synthetic_only``: train on synthetic, validate and test on real.

Validation and test always use real images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.config import TrainConfig
from benchmark.data.records import EchoData
from benchmark.grid import Protocol
from downstream.training import FitResult, Task, fit


@dataclass
class ProtocolResult:
    final: FitResult  # the run whose model is tested and whose curve measures convergence
    pretrain: FitResult | None = None  # the synthetic pretraining run of ``pretrain``


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
    has_synth = synthetic is not None and len(synthetic) > 0
    if protocol is Protocol.MIX:
        train = EchoData.concat([real_train, synthetic]) if has_synth else real_train
        return ProtocolResult(
            final=fit(model, task, train, val, cfg, device, seed, "mix", progress)
        )
    if not has_synth:
        raise ValueError(f"protocol {protocol.value!r} needs synthetic images")
    if protocol is Protocol.SYNTHETIC_ONLY:
        result = fit(model, task, synthetic, val, cfg, device, seed, "synthetic", progress)
        return ProtocolResult(final=result)
    if protocol is Protocol.PRETRAIN:
        pre = fit(model, task, synthetic, val, cfg, device, seed, "pretrain", progress)
        # fit() builds a new optimiser, schedule and early-stopping state: a fresh fine-tune.
        fine = fit(pre.model, task, real_train, val, cfg, device, seed + 1, "finetune", progress)
        return ProtocolResult(final=fine, pretrain=pre)
    raise ValueError(f"unknown protocol {protocol!r}")
