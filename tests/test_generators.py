import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from benchmark.data.phantom import make_phantom
from benchmark.grid import TRAINED_MODES, Mode
from benchmark.runtime import child_seed
from generators import diffusion, joint
from generators.base import GenerationContext
from generators.corrupted import CorruptedGenerator, derangement
from generators.oracle import OracleGenerator
from generators.registry import IMPLEMENTED, get_generator
from generators.unconditional import CLASSES, UnconditionalGenerator


@pytest.fixture(scope="module")
def real():
    return make_phantom(3, 32, seed=0)


def tiny(cfg, **changes):
    return dataclasses.replace(
        cfg.generator, train_steps=2, sample_steps=2, timesteps=10, batch_size=4, **changes
    )


def test_joint_encoding_round_trip(real):
    x = joint.encode(real.images, real.masks)
    assert x.shape == (len(real), 5, 32, 32) and x.min() >= -1 and x.max() <= 1
    images, masks = joint.decode(x)
    np.testing.assert_allclose(images, real.images, atol=1e-6)
    np.testing.assert_array_equal(masks, real.masks)
    assert joint.decode(joint.encode(real.images, None))[1] is None


@pytest.mark.parametrize("class_conditional", [False, True])
def test_unconditional_trains_samples_and_reloads(tmp_path, real, smoke_config, class_conditional):
    cfg = tiny(smoke_config, class_conditional=class_conditional)
    gen = UnconditionalGenerator("cpu")
    ctx = GenerationContext(real, smoke_config.data, None)
    summary = gen.train(ctx, cfg, tmp_path, progress=False)
    assert len(summary["losses"]) == 2 and all(np.isfinite(summary["losses"]))
    settings = json.loads((tmp_path / "echosynth.json").read_text())
    assert settings["class_conditional"] is class_conditional
    assert settings["per_class_models"] is False

    synth = gen.sample(tmp_path, ctx, cfg, n=5, seed=3, progress=False)
    assert synth.images.shape == (5, 32, 32) and synth.masks.shape == (5, 32, 32)
    assert synth.images.dtype == np.float32 and 0 <= synth.images.min() <= synth.images.max() <= 1
    assert set(np.unique(synth.masks)) <= {0, 1, 2, 3}
    assert (synth.meta["source"] == "synthetic").all()
    assert (synth.meta["label_source"] == "generated").all()
    if class_conditional:
        assert set(zip(synth.meta["view"], synth.meta["phase"])) <= set(CLASSES)
    again = gen.sample(tmp_path, ctx, cfg, n=5, seed=3, progress=False)
    np.testing.assert_array_equal(again.images, synth.images)  # seeded

    # Users reload it with plain diffusers.
    pipe = DiffusionPipeline.from_pretrained(tmp_path)
    assert pipe.unet.config.in_channels == 5
    assert type(pipe).__name__ == "DDPMPipeline"
    if not class_conditional:  # DDPMPipeline passes no class labels
        out = pipe(batch_size=2, num_inference_steps=2, output_type="np").images
        assert out.shape == (2, 32, 32, 5) and 0 <= out.min() <= out.max() <= 1


def test_per_class_models_train_one_model_per_class(tmp_path, real, smoke_config):
    """DE's setup: a DDPMPipeline per view x phase class, each on its class's images; a set
    draws the classes in the training data's proportions, each image from its class's
    model with noise of its own."""
    from generators.unconditional import _draw, class_folder

    cfg = tiny(smoke_config, per_class_models=True)
    gen = UnconditionalGenerator("cpu")
    gen.check(smoke_config.data, cfg, "phase")  # its images carry view and phase for cls
    # Without the 2CH ED images: that class gets no model and is never drawn.
    kept = real.subset(~((real.meta["view"] == "2CH") & (real.meta["phase"] == "ED")).to_numpy())
    ctx = GenerationContext(kept, smoke_config.data, None)
    summary = gen.train(ctx, cfg, tmp_path, progress=False)
    assert len(summary["losses"]) == 2 * 3  # 2 steps for each of the 3 classes present
    settings = json.loads((tmp_path / "echosynth.json").read_text())
    assert settings["per_class_models"] and settings["class_frequencies"][0] == 0
    assert sorted(settings["class_folders"]) == ["1", "2", "3"]
    assert not (tmp_path / class_folder(0)).exists()
    for c in (1, 2, 3):
        pipe = DiffusionPipeline.from_pretrained(tmp_path / class_folder(c))  # plain diffusers
        assert type(pipe).__name__ == "DDPMPipeline" and pipe.unet.config.in_channels == 5
    # Class models differ: each trained on other images from another seed.
    weights = [
        (tmp_path / class_folder(c) / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        for c in (1, 2, 3)
    ]
    assert len(set(weights)) == 3

    synth = gen.sample(tmp_path, ctx, cfg, n=12, seed=3, progress=False)
    classes = list(zip(synth.meta["view"], synth.meta["phase"]))
    assert synth.images.shape == (12, 32, 32) and synth.masks.shape == (12, 32, 32)
    assert ("2CH", "ED") not in classes and len(set(classes)) > 1
    assert (synth.meta["label_source"] == "generated").all()
    np.testing.assert_array_equal(
        gen.sample(tmp_path, ctx, cfg, n=12, seed=3, progress=False).images, synth.images
    )
    # Each image is its class model's, in the set's order.
    for c in {CLASSES.index(k) for k in classes}:
        members = [i for i, k in enumerate(classes) if k == CLASSES[c]]
        own = _draw(
            tmp_path / class_folder(c),
            cfg,
            len(members),
            child_seed(3, diffusion.CLASS_STREAM, c),
            None,
            torch.device("cpu"),
            False,
        )
        images, _ = joint.decode(own)
        np.testing.assert_array_equal(synth.images[members], images)


def test_class_conditional_settings_do_not_read_preloaded_labels(
    tmp_path, real, smoke_config, monkeypatch
):
    """With generator.preload the labels live on the GPU: the saved class frequencies must
    come from the host copy. ``meta`` stands in for CUDA (no data, no ``.numpy()``)."""
    from generators.acceleration import Acceleration

    monkeypatch.setattr(Acceleration, "place", lambda self, tensor, device: tensor.to("meta"))
    monkeypatch.setattr(
        diffusion, "train_denoiser", lambda *a, **k: diffusion.TrainResult([0.1], 0, 0.9)
    )
    cfg = tiny(smoke_config, class_conditional=True)
    ctx = GenerationContext(real, smoke_config.data, None)
    UnconditionalGenerator("cpu").train(ctx, cfg, tmp_path, progress=False)
    settings = json.loads((tmp_path / "echosynth.json").read_text())
    assert sum(settings["class_frequencies"]) == len(real)


def test_training_reduces_the_loss(real, smoke_config):
    cfg = dataclasses.replace(smoke_config.generator, train_steps=60, timesteps=100, batch_size=8)
    x0 = joint.encode(real.images, real.masks)
    unet = diffusion.build_unet(cfg, 32, 5, None)

    def batches(gen):
        while True:
            idx = torch.randint(0, len(x0), (8,), generator=gen)
            yield x0[idx], {}

    losses = diffusion.train_denoiser(unet, batches, cfg, torch.device("cpu"), 0, False).losses
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_gradients_are_clipped_to_grad_clip(real, smoke_config, monkeypatch, clip):
    """The optimizer steps on gradients of norm at most generator.grad_clip (0: unclipped)."""
    cfg = dataclasses.replace(smoke_config.generator, train_steps=3, timesteps=10, grad_clip=clip)
    x0 = joint.encode(real.images, real.masks)
    unet = diffusion.build_unet(cfg, 32, 5, None)
    norms = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        grads = [
            p.grad for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)

    def batches(gen):
        while True:
            yield x0[torch.randint(0, len(x0), (4,), generator=gen)], {}

    diffusion.train_denoiser(unet, batches, cfg, torch.device("cpu"), 0, False)
    assert len(norms) == 3
    if clip:
        assert max(norms) <= clip * (1 + 1e-4)
    else:
        assert min(norms) > 1e-2  # what an untrained UNet's loss gives, far above 1e-3


class _Constant(torch.nn.Module):
    """A denoiser that predicts 0 everywhere (its one weight cannot move at lr 1e-12)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, sample, t, **kwargs):
        return SimpleNamespace(sample=sample * 0 + self.w)  # a diffusers output's field


@pytest.mark.parametrize(("target", "expected"), [("epsilon", 1.0), ("v_prediction", None)])
def test_the_loss_is_on_the_configured_target(smoke_config, target, expected):
    """On black images (x0 = 0) a zero prediction costs E[noise^2] = 1 against the noise
    and E[alpha_bar_t] against the velocity sqrt(alpha_bar_t) * noise: the schedule's mean
    alpha_bar, about 0.5 for the cosine schedule."""
    cfg = dataclasses.replace(
        smoke_config.generator, train_steps=400, lr=1e-12, prediction_type=target
    )
    x0 = torch.zeros(16, 1, 8, 8)

    def batches(gen):
        while True:
            yield x0, {}

    losses = diffusion.train_denoiser(_Constant(), batches, cfg, torch.device("cpu"), 0, False)
    if expected is None:
        expected = float(diffusion.training_scheduler(cfg).alphas_cumprod.mean())
        assert 0.45 < expected < 0.55
    assert np.mean(losses.losses) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(("power", "cap"), [(2 / 3, 0.999), (0.75, 0.999), (0.75, 0.5)])
def test_ema_decay_is_a_cap_on_the_warmup_schedule(smoke_config, power, cap):
    """The decay of the last of 50 steps is min(cap, 1 - 50 ** -power) (diffusers' EMAModel
    warmup; ``ema_decay`` is its cap), and the power changes the averaged weights. The
    weight's gradient is constant, so it moves every step and its EMA lags it."""
    cfg = dataclasses.replace(
        smoke_config.generator, train_steps=50, lr=1e-3, ema_decay=cap, ema_power=power
    )

    class Ramp(_Constant):
        def forward(self, sample, t, **kwargs):
            return SimpleNamespace(sample=sample * 0 + self.w + 1)

    def batches(gen):
        while True:
            yield torch.zeros(2, 1, 4, 4), {}

    model = Ramp()
    result = diffusion.train_denoiser(model, batches, cfg, torch.device("cpu"), 0, False)
    assert result.ema_decay == pytest.approx(min(cap, 1 - 50**-power))
    if cap > 0.9:  # below the cap the power decides the average
        other = Ramp()
        cfg = dataclasses.replace(cfg, ema_power=0.5)
        diffusion.train_denoiser(other, batches, cfg, torch.device("cpu"), 0, False)
        assert abs(float(model.w.detach()) - float(other.w.detach())) > 1e-4


def test_each_rank_draws_its_own_batches_and_noise(monkeypatch, smoke_config):
    """Under several processes rank r seeds its batch stream and its noise with its own seed,
    so data parallel training sees different images on each; rank 0 (or a single process)
    draws exactly what it drew before there were ranks."""
    import accelerate

    cfg = dataclasses.replace(smoke_config.generator, train_steps=3, lr=1e-12)
    x0 = torch.zeros(4, 1, 8, 8)

    def train():
        seeds = []

        def batches(gen):
            seeds.append(gen.initial_seed())
            while True:
                yield x0, {}

        losses = diffusion.train_denoiser(_Constant(), batches, cfg, torch.device("cpu"), 7, False)
        return seeds, losses.losses

    alone = train()
    by_rank = {}
    for rank in (0, 1):

        class RankAccelerator(accelerate.Accelerator):
            process_index = rank  # as accelerate reports it on that rank

        monkeypatch.setattr(accelerate, "Accelerator", RankAccelerator)
        by_rank[rank] = train()
    assert alone[0] == by_rank[0][0] == [7] and by_rank[1][0] == [diffusion.rank_seed(7, 1)]
    # x0 = 0 and a zero prediction: each loss is the mean square of the noise drawn.
    assert by_rank[0][1] == alone[1] and by_rank[1][1] != alone[1]


def test_rank_seeds_are_no_other_trainings_stream():
    """No rank of a training draws the stream of another rank of another nearby seed: with
    seed + rank, rank 1 of seed s drew what rank 0 of seed s + 1 drew (the ControlNet's second
    phase, or the next seed's run)."""
    seeds = {(s, r): diffusion.rank_seed(s, r) for s in range(40) for r in range(8)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(seeds[s, 0] == s for s in range(40))  # one process trains as before
    assert all(0 <= v < 2**63 for v in seeds.values())  # a valid torch.Generator seed
    assert diffusion.rank_seed(5, 3) == diffusion.rank_seed(5, 3)  # the same on every call


def test_a_generator_seeds_streams_are_apart():
    """Every stream one generator seed spawns (ranks, the per-class models, the ControlNet's
    phase and its ranks) is no other stream of that seed or of seeds near it."""
    phase = [child_seed(s, *diffusion.CONTROLNET_STREAM) for s in range(40)]
    streams = (
        [diffusion.rank_seed(s, r) for s in range(40) for r in range(8)]
        + [child_seed(s, diffusion.CLASS_STREAM, c) for s in range(40) for c in range(8)]
        + [diffusion.rank_seed(p, r) for p in phase for r in range(8)]
    )
    assert len(set(streams)) == len(streams) == 40 * 24


def test_joint_loss_weights_give_the_label_channels_their_share():
    """The weights keep the loss's scale (mean 1); 0.8 is the plain mean over 1 + 4
    channels. With the whole error in the image channel, the loss is the image's share."""
    assert joint.loss_weights(1, 0.5) is None  # an image-only sample
    torch.testing.assert_close(joint.loss_weights(5, 0.8), torch.ones(5))
    weights = joint.loss_weights(5, 0.35)
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[1:].sum().item() / weights.sum().item() == pytest.approx(0.35)
    goal = torch.zeros(2, 5, 3, 3)
    goal[:, 0] = 1
    pred = torch.zeros_like(goal)
    assert diffusion.denoising_loss(pred, goal).item() == pytest.approx(0.2)
    assert diffusion.denoising_loss(pred, goal, weights).item() == pytest.approx(0.65)
    with pytest.raises(ValueError, match="1 or 5 channels"):
        joint.loss_weights(3, 0.5)


@pytest.mark.parametrize("share", [0.35, 0.8])
def test_mask_free_generators_weigh_the_loss_by_the_label_share(
    tmp_path, real, smoke_config, monkeypatch, share
):
    """Unconditional and text train on joint samples with the configured label share."""
    from generators.text import TextGenerator

    seen = []
    train = diffusion.train_denoiser

    def spy(*args, channel_weights=None, **kwargs):
        seen.append(channel_weights)
        return train(*args, channel_weights=channel_weights, **kwargs)

    monkeypatch.setattr(diffusion, "train_denoiser", spy)
    cfg = tiny(smoke_config, joint_label_share=share)
    UnconditionalGenerator("cpu").train(
        GenerationContext(real, smoke_config.data, None), cfg, tmp_path / "u", progress=False
    )
    TextGenerator("cpu").train(
        GenerationContext(real, smoke_config.data, 1), cfg, tmp_path / "t", progress=False
    )
    assert len(seen) == 2
    for weights in seen:
        torch.testing.assert_close(weights, joint.loss_weights(5, share))


def test_the_saved_scheduler_carries_target_and_spacing(smoke_config):
    """Samplers inherit the model's target from its saved scheduler; the step spacing is
    the sampling config's, whatever the model was saved with."""
    cfg = dataclasses.replace(smoke_config.generator, timestep_spacing="leading")
    train = diffusion.training_scheduler(cfg)
    assert train.config.prediction_type == "v_prediction"
    for sampler in ("ddpm", "ddim", "dpmsolver++"):
        kept = diffusion.sampling_scheduler(train, sampler)
        assert kept.config.prediction_type == "v_prediction"
        assert kept.config.timestep_spacing == "leading"
        trailing = diffusion.sampling_scheduler(train, sampler, "trailing")
        trailing.set_timesteps(10)
        assert int(trailing.timesteps[0]) == cfg.timesteps - 1  # starts at pure noise
    leading = diffusion.sampling_scheduler(train, "ddim")
    leading.set_timesteps(10)
    assert int(leading.timesteps[0]) == cfg.timesteps - cfg.timesteps // 10


class _LeakyBlackDenoiser(torch.nn.Module):
    """A velocity model of all-black images (x0 = -1) whose clean-image estimate keeps
    ``leak`` of the noise it sees: ``x0_hat = -1 + leak * eps``, an error of mean 0."""

    def __init__(self, scheduler, leak: float = 0.3) -> None:
        super().__init__()
        self.alphas = scheduler.alphas_cumprod
        self.leak = leak

    def forward(self, x, t, **kwargs):
        a = self.alphas[int(t)]
        eps = (x + a.sqrt()) / (1 - a).sqrt()
        x0_hat = -1 + self.leak * eps
        return SimpleNamespace(sample=(a.sqrt() * x - x0_hat) / (1 - a).sqrt())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_clipping_the_estimate_brightens_a_black_background(smoke_config, sampler):
    """Clipping x0_hat to [-1, 1] cuts only the errors below -1, so a black image comes
    out grey; unclipped, the errors cancel and the mean stays at -1."""
    train = diffusion.training_scheduler(smoke_config.generator)
    assert train.config.clip_sample is False  # the default, saved with every model
    means = {}
    for clip in (False, True):
        scheduler = diffusion.sampling_scheduler(train, sampler, clip_sample=clip)
        assert scheduler.config.clip_sample is clip
        x = diffusion.sample(
            _LeakyBlackDenoiser(train),
            scheduler,
            8,
            (1, 32, 32),
            20,
            8,
            0,
            torch.device("cpu"),
            progress=False,
        )
        means[clip] = x.mean().item()
    assert means[False] == pytest.approx(-1, abs=0.03)
    assert means[True] > -0.9


@pytest.mark.parametrize("mode", ["unconditional", "text", "semantic"])
@pytest.mark.parametrize("clip", [False, True])
def test_generators_sample_with_the_configured_clipping(
    tmp_path, real, smoke_config, monkeypatch, mode, clip
):
    seen = []
    sample = diffusion.sample

    def spy(unet, scheduler, *args, **kwargs):
        seen.append(scheduler.config.clip_sample)
        return sample(unet, scheduler, *args, **kwargs)

    monkeypatch.setattr(diffusion, "sample", spy)
    cfg = tiny(smoke_config, clip_sample=clip)
    gen = get_generator(Mode(mode))
    train = real.split("train")  # conditioning masks come from the training split only
    ctx = GenerationContext(train, smoke_config.data, None if mode != "text" else 1)
    gen.train(ctx, cfg, tmp_path, progress=False)
    gen.sample(tmp_path, ctx, cfg, n=2, seed=0, progress=False)
    assert seen == [clip]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_samplers(sampler, smoke_config):
    cfg = tiny(smoke_config)
    unet = diffusion.build_unet(cfg, 16, 1, None)
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(cfg), sampler)
    x = diffusion.sample(
        unet, scheduler, 3, (1, 16, 16), 2, 2, 0, torch.device("cpu"), progress=False
    )
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_a_set_does_not_depend_on_the_sample_batch_size(sampler, smoke_config):
    """generator.sample_batch_size is not in a synthetic set's key: every image's noise, the
    noise DDPM adds at each step too, is its own whatever batch draws it (DDPM's step noise
    drawn from the initial noise's stream made the later batches differ by about 4)."""
    cfg = tiny(smoke_config)
    unet = diffusion.build_unet(cfg, 16, 2, None)
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(cfg), sampler)
    whole, split = (
        diffusion.sample(unet, scheduler, 7, (2, 16, 16), 3, b, 0, torch.device("cpu"), False)
        for b in (7, 3)
    )
    # Batches of other sizes only round differently in the denoiser.
    torch.testing.assert_close(whole, split, atol=1e-4, rtol=0)


def test_oracle_gives_unseen_patients(real, smoke_config):
    ctx = GenerationContext(real, smoke_config.data, None)
    synth = OracleGenerator().sample(None, ctx, smoke_config.generator, 6, 0, False)
    assert len(synth) == 6 and (synth.meta["source"] == "synthetic").all()
    assert not set(synth.meta["patient"]) & set(real.meta["patient"])
    other = OracleGenerator().sample(None, ctx, smoke_config.generator, 6, 1, False)
    assert not set(other.meta["patient"]) & set(synth.meta["patient"])


def test_unavailable_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="'none' is not available yet"):
        get_generator(Mode.NONE)


def test_trained_modes_are_the_generators_that_train():
    # The planning modules (sweeps.plan, sweeps.projection) read TRAINED_MODES so as not to
    # import the generators; it must say what the generators themselves say.
    assert {m for m in IMPLEMENTED if get_generator(m).trains} == TRAINED_MODES


def test_derangement_has_no_fixed_point():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 101):
        perm = derangement(n, rng)
        assert sorted(perm) == list(range(n)) and not (perm == np.arange(n)).any()


def test_corrupted_pairs_images_with_wrong_labels(real, smoke_config):
    train = real.split("train")
    ctx = GenerationContext(train, smoke_config.data, None)
    synth = CorruptedGenerator().sample(None, ctx, smoke_config.generator, 2 * len(train), 0, False)
    assert len(synth) == 2 * len(train)
    assert (synth.meta["label_source"] == "mismatched").all()
    # every image is a real training image, but its label map is another image's
    for img, msk in zip(synth.images, synth.masks):
        own = next(i for i in range(len(train)) if np.array_equal(train.images[i], img))
        assert not np.array_equal(train.masks[own], msk)
