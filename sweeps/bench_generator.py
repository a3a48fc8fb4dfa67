"""``bench`` for the generators: training images/s with MFU, and sampling images/s per
sampler and step count at a measured Fréchet distance, each beside a plain reference.

The references are written the way the diffusers examples are: training as in
``examples/unconditional_image_generation/train_unconditional.py`` (eager float32, one
model, a shuffling ``DataLoader`` whose batches are moved to the device every step, plain
AdamW, ``DDPMScheduler.add_noise``, MSE to the config's target, gradient clipping; no EMA,
the example's default),
sampling with ``diffusers.DDIMPipeline`` at 50 steps in float32. On CUDA, with
``bench.bf16_references``, each reference is timed a second time under bf16 autocast (the
example's ``--mixed_precision bf16``, as the issue's own reference figures were): the
project's bf16 path against a bf16 eager loop, a ratio that bf16 alone does not make. The
project's paths are ``generators.diffusion.train_denoiser`` and
``generators.diffusion.sample`` with the speed options of
:class:`sweeps.bench_measure.Speed` (``generators.acceleration``, the sweep's generators'
own path).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

from benchmark.config import Config, parse_sampler
from benchmark.fidelity import EchoEncoder, fd_ratio_interval, features, frechet_distance
from benchmark.runtime import autocast, autocast_dtype
from generators import diffusion, joint
from sweeps.bench_measure import Speed, step_flops, timed

TRAIN_OPTIONS = ("bf16", "channels_last", "compile", "preload")
SAMPLE_OPTIONS = ("bf16", "channels_last", "compile", "cuda_graphs")


def generator_config(cfg: Config):
    """The generator settings the bench trains: the config's, with the bench's UNet widths
    if it sets them."""
    if cfg.bench.block_out_channels is None:
        return cfg.generator
    return dataclasses.replace(cfg.generator, block_out_channels=cfg.bench.block_out_channels)


def reference_train(
    unet: UNet2DModel,
    x0: torch.Tensor,
    gen_cfg,
    device: torch.device,
    steps: int,
    seed: int,
    dtype: torch.dtype | None = None,
) -> None:
    """``steps`` optimisation steps the diffusers example's way on ``x0`` ``(N, C, H, W)``
    (kept on the CPU; each batch is moved to the device, as the example's loader does).
    ``dtype`` (bf16): the forward under autocast, as accelerate runs the example's
    ``--mixed_precision bf16``; the weights, the loss and the step stay float32. None:
    float32 throughout, the example's default."""
    scheduler = diffusion.training_scheduler(gen_cfg)
    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=gen_cfg.lr, weight_decay=gen_cfg.weight_decay
    )
    batch_size = min(gen_cfg.batch_size, len(x0))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x0),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    unet.train()
    for (clean,) in itertools.islice(
        itertools.chain.from_iterable(itertools.repeat(loader)), steps
    ):
        clean = clean.to(device)
        noise = torch.randn(clean.shape, device=device)
        t = torch.randint(0, gen_cfg.timesteps, (len(clean),), device=device).long()
        noisy = scheduler.add_noise(clean, noise, t)
        # The project's target (the noise, or the velocity as the diffusers text-to-image
        # example computes it).
        target = diffusion.target(scheduler, clean, noise, t)
        with autocast(dtype, device):
            prediction = unet(noisy, t).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        loss.detach().item()  # the example logs the loss every step


def _batches(x0: torch.Tensor, batch_size: int):
    """The unconditional generator's batch stream: reshuffled epochs, ragged batch dropped."""

    def batches(gen: torch.Generator) -> Iterator[diffusion.Batch]:
        while True:
            order = torch.randperm(len(x0), generator=gen)
            for i in range(0, len(order) - batch_size + 1, batch_size):
                yield x0[order[i : i + batch_size].to(x0.device)], {}

    return batches


def bench_generator_train(
    cfg: Config, x0: torch.Tensor, device: torch.device, speed: Speed, peak: float | None
) -> tuple[dict, UNet2DModel]:
    """Training images/s and MFU of the reference loop and of ``train_denoiser``.

    ``x0`` ``(N, C, H, W)`` in [-1, 1]. Returns the figures and the project's trained UNet
    (its EMA weights), which the sampling bench samples.
    """
    bench, gen_cfg = cfg.bench, generator_config(cfg)
    batch_size = min(gen_cfg.batch_size, len(x0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen_cfg.seed)
        unet = diffusion.build_unet(gen_cfg, x0.shape[-1], x0.shape[1], None)
    reference = copy.deepcopy(unet).to(device)
    half = autocast_dtype("bf16", device) if bench.bf16_references else None  # None on CPU

    # FLOPs of one training step's forward and backward at this batch size (eager model).
    def one_step() -> None:
        noisy = torch.randn((batch_size, *x0.shape[1:]), device=device)
        t = torch.randint(0, gen_cfg.timesteps, (batch_size,), device=device)
        reference(noisy, t).sample.float().pow(2).mean().backward()

    flops = step_flops(one_step)
    reference.zero_grad(set_to_none=True)

    reference_train(reference, x0, gen_cfg, device, bench.warmup_steps, gen_cfg.seed)
    ref_seconds, _ = timed(
        lambda: reference_train(reference, x0, gen_cfg, device, bench.train_steps, 1), device
    )
    half_seconds = None
    if half is not None:  # the same loop from the same initial weights, under bf16 autocast
        reference.load_state_dict(unet.state_dict())
        reference_train(reference, x0, gen_cfg, device, bench.warmup_steps, gen_cfg.seed, half)
        half_seconds, _ = timed(
            lambda: reference_train(reference, x0, gen_cfg, device, bench.train_steps, 1, half),
            device,
        )

    accel = speed.acceleration()
    model = unet.to(device)
    batches = _batches(accel.place(x0, device), batch_size)
    # The generators' own loss: a joint sample's label channels at their share.
    weights = joint.loss_weights(x0.shape[1], gen_cfg.joint_label_share)

    def train(steps: int, seed: int) -> diffusion.TrainResult:
        # The default bf16 path on CUDA, whatever generator.precision the config sets.
        steps_cfg = dataclasses.replace(gen_cfg, train_steps=steps, precision="bf16")
        return diffusion.train_denoiser(
            model, batches, steps_cfg, device, seed, False, accel, channel_weights=weights
        )

    if bench.warmup_steps:
        train(bench.warmup_steps, gen_cfg.seed)
    # The loop's own clock: after accelerate's set-up, which a whole training pays once. The
    # loop reads its last losses at the end, so the device has finished its steps then.
    result = train(bench.train_steps, 1)
    seconds = result.seconds
    if bench.sample_train_steps:  # untimed: a model worth sampling for the fidelity check
        train(bench.sample_train_steps, 2)

    def figures(seconds: float) -> dict:
        rate = flops * bench.train_steps / seconds
        return {
            "seconds": seconds,
            "images_per_s": batch_size * bench.train_steps / seconds,
            "tflops_per_s": rate / 1e12,
            "mfu": None if peak is None else rate / peak,
        }

    ref, proj = figures(ref_seconds), figures(seconds)
    proj["options"] = speed.as_dict(*TRAIN_OPTIONS) | {
        "fused_adamw": device.type == "cuda",
        "ema": True,
    }
    proj["loss_finite"] = bool(np.isfinite(result.losses).all())
    ref["options"] = {"bf16": False, "ema": False, "loader": "torch DataLoader, CPU tensors"}
    ref_half = None
    if half_seconds is not None:
        ref_half = figures(half_seconds) | {"options": ref["options"] | {"bf16": True}}
    out = {
        "model": {
            "block_out_channels": list(gen_cfg.block_out_channels),
            "layers_per_block": gen_cfg.layers_per_block,
            "attention": gen_cfg.attention,
            "in_channels": int(x0.shape[1]),
            "size": int(x0.shape[-1]),
            "parameters": sum(p.numel() for p in unet.parameters()),
        },
        "batch_size": batch_size,
        "steps": bench.train_steps,
        "flops_per_image": flops / batch_size,
        "flops_per_step": flops,
        "reference": ref,
        "reference_bf16": ref_half,  # null on CPU or without bench.bf16_references
        "project": proj,
        "ratio": proj["images_per_s"] / ref["images_per_s"],
        "ratio_bf16": None if ref_half is None else proj["images_per_s"] / ref_half["images_per_s"],
        # One generator of the config: generator.train_steps at the project's rate.
        "projected_seconds_per_generator": cfg.generator.train_steps * seconds / bench.train_steps,
    }
    return out, unet


def _eager_copy(unet: UNet2DModel, device: torch.device) -> UNet2DModel:
    """A fresh float32 UNet with ``unet``'s weights (no wrappers that training attached)."""
    fresh = UNet2DModel.from_config(unet.config)
    fresh.load_state_dict(unet.state_dict())
    return fresh.to(device).eval()


def reference_sample(
    unet: UNet2DModel,
    train_scheduler,
    n: int,
    batch_size: int,
    steps: int,
    seed: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``(n, C, H, W)`` samples in [0, 1] on the CPU from ``diffusers.DDIMPipeline`` in
    float32 (``dtype``, bf16: the UNet under autocast): the same initial noise as
    :func:`generators.diffusion.sample` draws for ``seed`` (one CPU generator, batch after
    batch)."""
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(train_scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        # "np" (B, H, W, C), as the example asks: every diffusers version returns it.
        with autocast(dtype, unet.device):
            result = pipe(batch_size=b, generator=gen, num_inference_steps=steps, output_type="np")
        out.append(torch.from_numpy(result.images).float().permute(0, 3, 1, 2))
    return torch.cat(out)


def bench_sampling(
    cfg: Config,
    unet: UNet2DModel,
    encoder: EchoEncoder,
    real_images: np.ndarray,
    device: torch.device,
    speed: Speed,
) -> dict:
    """Sampling images/s of each ``bench.samplers`` entry and of the DDIM reference, and the
    Fréchet distance (echo encoder) of each one's images to ``real_images`` ``(M, H, W)``.

    Every sampler starts from the same noise, so ``mean_abs_diff_to_reference`` (image
    space, [0, 1]) pairs its images with the reference's, and so does the bootstrap of the
    FD ratio's interval (``fd_ratio_interval``, ``bench.fd_resamples`` resamples).
    """
    bench, gen_cfg = cfg.bench, generator_config(cfg)
    n, seed = bench.sample_images, gen_cfg.seed
    batch_size = min(gen_cfg.sample_batch_size, n)
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    train_scheduler = diffusion.training_scheduler(gen_cfg)

    def fd(fake: torch.Tensor, against: torch.Tensor) -> float:
        """The Fréchet distance of two sets' echo-encoder features ``(M, dim)``, ``(N, dim)``."""
        return max(frechet_distance(against, fake), 0.0)  # equal sets: -1e-7 in float32

    real_features = features(encoder, real_images)  # every set is encoded once

    reference = _eager_copy(unet, device)
    reference_sample(reference, train_scheduler, min(n, batch_size), batch_size, 2, seed)
    ref_seconds, ref_x = timed(
        lambda: reference_sample(
            reference, train_scheduler, n, batch_size, bench.reference_steps, seed
        ),
        device,
    )
    ref_images = ref_x[:, 0].numpy()
    ref_features = features(encoder, ref_images)
    ref = {
        "sampler": "ddim",
        "steps": bench.reference_steps,
        "implementation": "diffusers.DDIMPipeline, float32, eager",
        "seconds": ref_seconds,
        "images_per_s": n / ref_seconds,
        "fd": fd(ref_features, real_features),
    }
    ref_half = None
    half = autocast_dtype("bf16", device) if bench.bf16_references else None  # None on CPU
    if half is not None:

        def draw_half(count: int, steps: int) -> torch.Tensor:
            return reference_sample(
                reference, train_scheduler, count, batch_size, steps, seed, half
            )

        draw_half(min(n, batch_size), 2)
        half_seconds, half_x = timed(lambda: draw_half(n, bench.reference_steps), device)
        ref_half = ref | {
            "implementation": "diffusers.DDIMPipeline, bf16 autocast, eager",
            "seconds": half_seconds,
            "images_per_s": n / half_seconds,
            "fd": fd(features(encoder, half_x[:, 0].numpy()), real_features),
        }

    # Prepared once (compiled, graphed), as generators.acceleration does for a whole set.
    denoiser = speed.acceleration().sampling_model(_eager_copy(unet, device))

    def run(name: str, steps: int) -> torch.Tensor:
        scheduler = diffusion.sampling_scheduler(train_scheduler, name)
        return diffusion.sample(
            denoiser, scheduler, n, shape, steps, batch_size, seed, device, progress=False
        )

    run("ddim", 2)  # warm-up: compiles and captures the graphs of every batch shape
    samplers = []
    for spec in bench.samplers:
        name, steps = parse_sampler(spec)
        seconds, x = timed(lambda name=name, steps=steps: run(name, steps), device)
        images = joint.decode(x)[0]
        fake = features(encoder, images)
        samplers.append(
            {
                "sampler": name,
                "steps": steps,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "ratio": ref_seconds / seconds,
                "ratio_bf16": None if ref_half is None else ref_half["seconds"] / seconds,
                "fd": fd(fake, real_features),
                "fd_to_reference": fd(fake, ref_features),
                "mean_abs_diff_to_reference": float(np.abs(images - ref_images).mean()),
            }
        )
        samplers[-1]["fd_ratio"] = samplers[-1]["fd"] / ref["fd"]
        if bench.fd_resamples:
            samplers[-1]["fd_ratio_interval"] = fd_ratio_interval(
                real_features, fake, ref_features, bench.fd_resamples
            )
    return {
        "images": n,
        "batch_size": batch_size,
        "fd_extractor": "echo-encoder",
        "fd_reference_images": len(real_images),
        "options": speed.as_dict(*SAMPLE_OPTIONS),
        "reference": ref,
        "reference_bf16": ref_half,  # null on CPU or without bench.bf16_references
        "samplers": samplers,
    }
