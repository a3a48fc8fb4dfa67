"""Shared diffusion training and sampling for every generator mode.

Training: the DDPM loss on the velocity or the noise (``generator.prediction_type``) with
accelerate (device placement, autocast on GPU at ``generator.precision``, data parallel
over the processes of ``accelerate launch`` / ``torchrun``), AdamW, EMA weights, gradient
clipping, a progress bar and a loss curve. Sampling: DDPM, DDIM or DPM-Solver++ from
diffusers, batched and seeded, with optional classifier-free guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    SchedulerMixin,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from benchmark.config import GeneratorConfig
from benchmark.runtime import autocast, autocast_dtype, child_seed
from generators import resume
from generators.acceleration import Acceleration, restore_layout

# A batch is (x0, model kwargs): x0 (B, C, H, W) in [-1, 1]; kwargs e.g. class_labels (B,).
Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


def build_unet(
    cfg: GeneratorConfig,
    size: int,
    channels: int,
    num_classes: int | None,
    out_channels: int | None = None,
) -> UNet2DModel:
    """A diffusers ``UNet2DModel`` sized by the config; attention only at the lowest level.

    ``channels`` in, ``out_channels`` (default ``channels``) out: mask-guided modes feed the
    label map as extra input channels and predict the image's noise only.
    """
    n = len(cfg.block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels if out_channels is None else out_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        add_attention=cfg.attention,
        norm_num_groups=math.gcd(*cfg.block_out_channels, 32),
        num_class_embeds=num_classes,
    )


def build_cond_unet(
    cfg: GeneratorConfig,
    size: int,
    in_channels: int,
    out_channels: int,
    cross_attention_dim: int,
) -> UNet2DConditionModel:
    """A diffusers ``UNet2DConditionModel`` (text-conditioned, as in Stable Diffusion) sized
    by the config: ``(B, in_channels, size, size)`` and prompt token states
    ``(B, L, cross_attention_dim)`` -> ``(B, out_channels, size, size)``.

    Cross-attention sits in the mid block and at the ``cfg.cross_attention_levels`` lowest
    resolution levels (default: every level but the highest-resolution one, where attention
    costs most); one head per 32 channels.
    """
    n = len(cfg.block_out_channels)
    levels = cfg.cross_attention_levels or max(1, n - 1)
    down = ["DownBlock2D"] * (n - levels) + ["CrossAttnDownBlock2D"] * levels
    up = down[::-1]
    up = [b.replace("Down", "Up") for b in up]
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        cross_attention_dim=cross_attention_dim,
        # diffusers reads attention_head_dim as the number of heads in this model.
        attention_head_dim=tuple(max(1, c // 32) for c in cfg.block_out_channels),
        norm_num_groups=math.gcd(*cfg.block_out_channels, 32),
    )


class ConcatConditioning(torch.nn.Module):
    """Wraps a UNet so that a conditioning map is concatenated to its noisy input.

    ``forward(sample (B, C, H, W), t, cond (B, K, H, W), **kwargs)`` calls
    ``unet(cat([sample, cond], 1), t, **kwargs)``, so :func:`train_denoiser` and
    :func:`sample` condition on label maps through their ordinary per-batch kwargs.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep, cond: torch.Tensor, **kwargs):
        return self.unet(torch.cat([sample, cond.to(sample.dtype)], dim=1), timestep, **kwargs)


def training_scheduler(cfg: GeneratorConfig) -> DDPMScheduler:
    """The noise schedule, the model's target and the sampling settings (step spacing,
    clipping); the samplers are built from its config, so a saved pipeline carries them."""
    return DDPMScheduler(
        num_train_timesteps=cfg.timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        timestep_spacing=cfg.timestep_spacing,
        clip_sample=cfg.clip_sample,
    )


def sampling_scheduler(
    train_scheduler: SchedulerMixin,
    sampler: str,
    timestep_spacing: str | None = None,
    clip_sample: bool | None = None,
) -> SchedulerMixin:
    """The configured sampler built from the training scheduler's noise schedule and
    target; ``timestep_spacing`` and ``clip_sample`` (None: the training scheduler's) are
    sampling choices, so a saved model is sampled with today's settings. ``clip_sample``
    clips the clean-image estimate of every DDPM and DDIM step; DPM-Solver++ has no such
    option."""
    config = dict(train_scheduler.config)
    if timestep_spacing is not None:
        config["timestep_spacing"] = timestep_spacing
    if clip_sample is not None:
        config["clip_sample"] = clip_sample
    if sampler == "ddpm":
        return DDPMScheduler.from_config(config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    if sampler == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    raise ValueError(f"unknown sampler {sampler!r}")


def target(
    scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the denoiser regresses on, for ``x0`` ``(B, C, H, W)`` noised with ``noise`` at
    steps ``t`` ``(B,)``: the velocity (``prediction_type`` v_prediction) or the noise."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return noise


def denoising_loss(
    pred: torch.Tensor, goal: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error of ``pred`` against ``goal`` ``(B, C, H, W)``; with ``weights``
    ``(C,)``, each channel's squared error is multiplied by its weight first."""
    if weights is None:
        return torch.nn.functional.mse_loss(pred, goal)
    return ((pred - goal).square() * weights[:, None, None]).mean()


@dataclass
class TrainResult:
    losses: list[float]  # one value per optimisation step
    seconds: float
    ema_decay: float  # the EMA decay of the last step (generator.ema_decay is its cap)


# Step losses are read from the device in blocks of this many steps: reading one every
# step would make the host wait for the device at every step.
LOSS_READ_EVERY = 25


def train_denoiser(
    unet: torch.nn.Module,
    batches: Callable[[torch.Generator], Iterator[Batch]],
    cfg: GeneratorConfig,
    device: torch.device,
    seed: int,
    progress: bool = True,
    speed: Acceleration | None = None,
    channel_weights: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``unet`` for ``cfg.train_steps`` steps to predict, from ``x0`` noised at a random
    step, the velocity or the noise (``cfg.prediction_type``: the scheduler's target).

    ``channel_weights`` ``(C,)``: each of ``x0``'s channels has its squared error weighted
    by it (a joint sample's image against its label channels,
    :func:`generators.joint.loss_weights`); None: the plain mean over channels.

    ``batches(generator)`` yields an endless stream of batches; the final weights are the
    EMA weights (copied into ``unet``, in the default NCHW layout). Only parameters that
    require gradients are optimised and averaged, so a module may hold frozen parts (a
    ControlNet's base UNet). ``speed``: the CUDA speed options (default: the config's,
    :class:`generators.acceleration.Acceleration`).

    Noise and timesteps come from a generator seeded with ``seed`` on the device (on the CPU,
    the batch stream's own): CPU runs are bitwise reproducible, GPU runs need no host draws.
    A non-finite loss raises ``FloatingPointError`` naming its step, within
    ``LOSS_READ_EVERY`` steps of it.

    Under several processes (``accelerate launch``, ``torchrun``; every rank calls this with
    the same arguments) the training is data parallel: rank ``r`` seeds its batch stream and
    its noise with :func:`rank_seed`, so the ranks draw different batches, and DDP averages their
    gradients; a step then sees ``cfg.batch_size`` images per rank. The optimizer and EMA
    steps follow the averaged gradients, so the weights stay identical on every rank; the
    losses returned (and checked) are the mean over the ranks. One process: rank 0, ``seed``.
    """
    import time

    from accelerate import Accelerator

    speed = Acceleration.resolve(cfg, device) if speed is None else speed
    # accelerate's autocast (and, for fp16, its loss scaling: backward, clipping and the
    # optimizer step go through the accelerator) at generator.precision; float32 on the CPU.
    dtype = autocast_dtype(cfg.precision, device)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no"),
    )
    scheduler = training_scheduler(cfg)
    params = [p for p in unet.parameters() if p.requires_grad]
    # torch's fused AdamW kernel on CUDA (one launch for every parameter); None elsewhere.
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    model, optimizer = accelerator.prepare(speed.training_model(unet), optimizer)
    # The same Parameter objects after prepare (DDP wraps the module, not its parameters).
    # foreach: one multi-tensor kernel per EMA step on the GPU instead of one per parameter.
    ema = EMAModel(
        params,
        decay=cfg.ema_decay,
        use_ema_warmup=True,
        power=cfg.ema_power,
        foreach=fused is True,
    )
    ema.to(accelerator.device)
    own_seed = rank_seed(seed, accelerator.process_index)  # each rank its batches and noise
    gen = torch.Generator().manual_seed(own_seed)
    on_device = gen
    if accelerator.device.type != "cpu":
        on_device = torch.Generator(accelerator.device).manual_seed(own_seed)
    stream = batches(gen)
    weights = None if channel_weights is None else channel_weights.to(accelerator.device)
    step_losses = torch.empty(cfg.train_steps, device=accelerator.device)
    losses: list[float] = []
    started = time.time()

    def draw(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's noise and timesteps for the batch ``x0`` (on the device)."""
        noise = torch.randn(x0.shape, generator=on_device, device=on_device.device)
        t = torch.randint(
            0, cfg.timesteps, (x0.shape[0],), generator=on_device, device=on_device.device
        )
        return noise, t

    checkpoint = resume.next_checkpoint()
    saved = checkpoint.load() if checkpoint else None
    first = 0
    if saved is not None:
        first, losses = _restore(saved, cfg, unet, optimizer, ema, accelerator)
        step_losses[:first] = torch.tensor(losses, device=accelerator.device)
        started -= saved["seconds"]
        for _ in range(first):  # the random draws of the steps done, without the model
            x0, _ = next(stream)
            draw(x0.to(accelerator.device))
    model.train()
    show = progress and accelerator.is_main_process
    bar = tqdm(
        range(first, cfg.train_steps),
        desc="train generator",
        disable=not show,
        leave=False,
        initial=first,
        total=cfg.train_steps,
    )

    def read_losses(upto: int) -> None:
        """Copy step losses ``len(losses)..upto-1`` to the host (one wait for the device);
        under several ranks their mean, so every rank sees (and stops at) the same value."""
        block = step_losses[len(losses) : upto]
        if accelerator.num_processes > 1:
            block = accelerator.reduce(block, reduction="mean")
        block = block.tolist()
        bad = next((i for i, v in enumerate(block) if not math.isfinite(v)), None)
        if bad is not None:
            raise FloatingPointError(
                f"generator loss became {block[bad]} at step {len(losses) + bad}"
            )
        losses.extend(block)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")

    for step in bar:
        x0, kwargs = next(stream)
        x0 = x0.to(accelerator.device, non_blocking=True)
        kwargs = {k: v.to(accelerator.device, non_blocking=True) for k, v in kwargs.items()}
        noise, t = draw(x0)
        noisy = scheduler.add_noise(x0, noise, t)
        with accelerator.autocast():
            pred = model(noisy, t, **kwargs).sample
        loss = denoising_loss(pred.float(), target(scheduler, x0, noise, t), weights)
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(params)
        step_losses[step] = loss.detach()
        last = step + 1 == cfg.train_steps
        if (step + 1) % LOSS_READ_EVERY == 0 or (checkpoint and (checkpoint.due(step) or last)):
            read_losses(step + 1)
        # The finished phase is kept too: a resume of a later phase redoes none of it.
        if checkpoint and (checkpoint.due(step) or last) and accelerator.is_main_process:
            checkpoint.save(
                _state(step + 1, losses, time.time() - started, unet, optimizer, ema, accelerator)
            )
    read_losses(cfg.train_steps)
    ema.copy_to(params)
    restore_layout(unet)
    return TrainResult(
        losses=losses,
        seconds=time.time() - started,
        ema_decay=float(ema.get_decay(ema.optimization_step)),
    )


def _state(step, losses, seconds, unet, optimizer, ema, accelerator) -> dict:
    """What a resumed training needs of one after ``step`` steps (tensors on the CPU)."""
    scaler = getattr(accelerator, "scaler", None)
    return {
        "step": step,
        "losses": list(losses),
        "seconds": seconds,
        "model": {k: v.detach().cpu() for k, v in unet.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        # The global streams (dropout, if a model has any): the rest is replayed from seeds.
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore(saved, cfg, unet, optimizer, ema, accelerator) -> tuple[int, list[float]]:
    """Load a checkpoint's states; returns (steps done, their losses)."""
    step = int(saved["step"])
    if not 0 < step <= cfg.train_steps or len(saved["losses"]) != step:
        raise ValueError(
            f"generator checkpoint at step {step} does not fit generator.train_steps "
            f"{cfg.train_steps}: delete its folder to train from the start"
        )
    unet.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    ema.load_state_dict(saved["ema"])
    ema.to(accelerator.device)
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return step, [float(v) for v in saved["losses"]]


@torch.no_grad()
def sample(
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    n: int,
    shape: tuple[int, int, int],
    steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    kwargs_for: Callable[[slice], dict[str, torch.Tensor]] | None = None,
    progress: bool = True,
    uncond_kwargs_for: Callable[[slice], dict[str, torch.Tensor]] | None = None,
    guidance_scale: float = 1.0,
    speed: Acceleration | None = None,
    precision: str = "bf16",
) -> torch.Tensor:
    """Draw ``n`` samples of ``shape`` (C, H, W) -> ``(n, C, H, W)`` on CPU.

    ``kwargs_for(slice)`` gives the conditioning of the samples in that slice (e.g. class
    labels). The noise of sample ``i`` depends only on ``seed`` and ``i``, not on the device
    or ``batch_size``: its initial noise is the ``i``-th draw of one CPU stream seeded by
    ``seed`` (batches take consecutive draws), and the noise DDPM adds at every step comes
    from a CPU stream of its own (:func:`step_generators`). Batches of other sizes still
    round differently in the denoiser (about 1e-6).

    Classifier-free guidance: with ``uncond_kwargs_for`` (the same slice's conditioning with
    the prompt dropped) and ``guidance_scale != 1``, the model's estimate (noise or velocity,
    the scheduler's ``prediction_type``; guidance is linear in either) is
    ``u + guidance_scale * (c - u)``; without them sampling is unguided.

    ``speed``: CUDA speed options for the denoiser (channels_last, compile, CUDA-graph
    replay; :class:`generators.acceleration.Acceleration`); default none. ``precision``: the
    denoiser's autocast on CUDA (``generator.precision``); the solver steps run in float32.
    """
    guided = uncond_kwargs_for is not None and guidance_scale != 1.0
    dtype = autocast_dtype(precision, device)
    unet = unet.to(device).eval()
    if speed is not None:
        unet = speed.sampling_model(unet)
    gen = torch.Generator().manual_seed(seed)
    out = []
    bar = tqdm(total=n, desc="sample", disable=not progress, leave=False, unit="img")
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        b = sl.stop - sl.start
        x = torch.randn((b, *shape), generator=gen).to(device)
        steps_gen = step_generators(seed, sl)
        kwargs = {k: v.to(device) for k, v in (kwargs_for(sl) if kwargs_for else {}).items()}
        if guided:
            uncond = {k: v.to(device) for k, v in uncond_kwargs_for(sl).items()}
        scheduler.set_timesteps(steps)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(x, t)
            with autocast(dtype, device):
                eps = unet(model_in, t, **kwargs).sample
                if guided:  # combined in float32: the difference of two half estimates is small
                    eps_u = unet(model_in, t, **uncond).sample.float()
                    eps = eps_u + guidance_scale * (eps.float() - eps_u)
            # Not ``gen``: DDPM's step noise drawn from it made every later batch's initial
            # noise, and so the set, depend on the batch size.
            x = scheduler.step(eps.float(), t, x, generator=steps_gen).prev_sample
        out.append(x.cpu())
        bar.update(b)
    bar.close()
    return torch.cat(out)


# The streams a generator's seed spawns (``child_seed`` keys), apart so none draws another's
# numbers: rank r >= 1 takes ``(r,)`` (rank_seed); the model of class c ``(0, c)``
# (``per_class_models``); the ControlNet's training phase ``(0,)``.
CLASS_STREAM = 0
CONTROLNET_STREAM = (0,)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s batch stream and noise in a training seeded ``seed``:
    ``seed`` itself on rank 0 (one process trains as it always did), a child of ``seed`` from
    ``SeedSequence(seed, spawn_key=(rank,))`` on the others. Not ``seed + rank``: that is
    rank 0's stream of the training seeded ``seed + rank``, such as the ControlNet's second
    phase (``seed + 1``) or the run of the next seed."""
    return seed if rank == 0 else child_seed(seed, rank)


def step_generators(seed: int, sl: slice) -> list[torch.Generator]:
    """One CPU generator per sample of ``sl`` for the noise a stochastic sampler (DDPM) adds
    at each step, seeded by ``(seed, i)`` for sample ``i``: diffusers draws each sample's
    noise from its own generator of the list, whatever batch the sample is in. The
    deterministic samplers (DDIM, DPM-Solver++) draw nothing from them."""
    return [
        torch.Generator().manual_seed(
            int(np.random.SeedSequence((seed, i)).generate_state(1, np.uint64)[0])
        )
        for i in range(sl.start, sl.stop)
    ]
