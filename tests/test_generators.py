import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from benchmark.data.phantom import make_phantom
from benchmark.grid import TRAINED_MODES, Mode
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


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_samplers(sampler, smoke_config):
    cfg = tiny(smoke_config)
    unet = diffusion.build_unet(cfg, 16, 1, None)
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(cfg), sampler)
    x = diffusion.sample(
        unet, scheduler, 3, (1, 16, 16), 2, 2, 0, torch.device("cpu"), progress=False
    )
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()


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
