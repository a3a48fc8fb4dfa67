"""benchmark/fidelity.py: metrics checkable by hand and the echo-encoder recipe."""

import math

import numpy as np
import pytest
import torch

from benchmark.data.phantom import make_phantom
from benchmark.fidelity import (
    CLASSES,
    conditioning_accuracies,
    conditioning_accuracy,
    distribution_fidelity,
    fd_ratio_interval,
    features,
    intensity_distance,
    mask_alignment,
    memorisation,
    nearest_distances,
    precision_recall,
    train_encoder,
    weights_hash,
)


@pytest.fixture(scope="module")
def data():
    return make_phantom(4, 32, seed=0)


@pytest.fixture(scope="module")
def encoder(data):
    return train_encoder(data.split("train"), steps=5, seed=0)


def test_precision_recall_by_hand():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # k=1: every real radius is 1
    fake = torch.tensor([[0.5], [10.0]])  # one inside the real balls; fake radii are 9.5
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    assert precision_recall(real, real, k=1) == (1.0, 1.0)
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(real[:3], real, k=3)


def test_fd_ratio_interval_resamples_the_pairs_together():
    """One resample is the ratio of torchmetrics' FDs on the drawn rows (checked against the
    draws made again here); identical paired sets give exactly 1; a set that is its pair
    plus a little noise gives a narrow interval around 1, which drawing the two sets'
    indices apart would not (their FDs would then differ by the resamples' noise)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from benchmark.fidelity import GivenFeatures

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 4, generator=gen, dtype=torch.float64)
    ref = torch.randn(200, 4, generator=gen, dtype=torch.float64) + 0.5
    fake = ref + 0.01 * torch.randn(200, 4, generator=gen, dtype=torch.float64)

    draws = torch.Generator().manual_seed(7)
    rows = torch.randint(300, (300,), generator=draws)
    pairs = torch.randint(200, (200,), generator=draws)

    def fd(a, b):
        metric = FrechetInceptionDistance(feature=GivenFeatures(4))
        metric.update(a, real=True)
        metric.update(b, real=False)
        return float(metric.compute())

    by_hand = fd(real[rows], fake[pairs]) / fd(real[rows], ref[pairs])
    lo, hi = fd_ratio_interval(real, fake, ref, resamples=1, seed=7)
    assert lo == pytest.approx(by_hand, rel=1e-9) and hi == pytest.approx(by_hand, rel=1e-9)

    assert fd_ratio_interval(real, ref, ref, resamples=20) == (1.0, 1.0)
    lo, hi = fd_ratio_interval(real, fake, ref, resamples=100)
    assert lo <= fd(real, fake) / fd(real, ref) <= hi and hi - lo < 0.05
    apart = [
        fd(real, fake[torch.randint(200, (200,), generator=gen)])
        / fd(real, ref[torch.randint(200, (200,), generator=gen)])
        for _ in range(20)
    ]
    assert max(apart) - min(apart) > 4 * (hi - lo)
    with pytest.raises(ValueError, match="paired sets differ"):
        fd_ratio_interval(real, fake[:10], ref)


def test_mask_alignment_by_hand():
    a = np.zeros((2, 4, 4), np.uint8)
    a[:, :2] = 1
    b = a.copy()
    b[1] = 0
    b[1, 2:] = 1  # image 1: LV disjoint -> Dice 0; image 0 identical -> 1
    out = mask_alignment(b, a)
    assert out["dice_LV"] == 0.5 and math.isnan(out["dice_MYO"]) and out["dice_mean"] == 0.5


def test_memorisation_by_hand():
    """Training images black and white; one synthetic image is the black one (a copy, RMS
    distance 0), the other mid-grey (0.5 from both). The new real images at 0.25 and 0.8
    lie 0.25 and 0.2 from the training set: only the copy is nearer than both."""
    train = np.stack([np.zeros((4, 4)), np.ones((4, 4))])
    synthetic = np.stack([np.zeros((4, 4)), np.full((4, 4), 0.5)])
    reference = np.stack([np.full((4, 4), 0.25), np.full((4, 4), 0.8)])
    out = memorisation(train, synthetic, reference)
    assert out["copy_share"] == 0.5 and out["n_train"] == 2
    assert out["nn_ratio"] == pytest.approx(0.25 / 0.225)  # medians of (0, 0.5), (0.25, 0.2)
    assert memorisation(train, train, reference)["copy_share"] == 1.0
    with pytest.raises(ValueError, match="resolutions differ"):
        memorisation(train, synthetic[:, :2], reference)
    # The reference's own distances, computed once for several sets, are what it measures.
    nearest = nearest_distances(reference, train)
    assert nearest.tolist() == pytest.approx([0.25, 0.2])
    assert memorisation(train, synthetic, reference, nearest) == out
    with pytest.raises(ValueError, match="1 distances for 2 references"):
        memorisation(train, synthetic, reference, nearest[:1])


def test_intensity_distance_by_hand():
    """8-bit levels 51 and 178 everywhere are 127 levels apart. Half black and half white
    against all black: half of the pixels move 255 levels."""
    grey = np.full((2, 4, 4), 51 / 255)
    assert intensity_distance(grey, np.full((3, 4, 4), 178 / 255)) == pytest.approx(127)
    assert intensity_distance(grey, grey) == 0.0
    half = np.zeros((2, 4, 4))
    half[:, :2] = 1.0
    assert intensity_distance(np.zeros((1, 4, 4)), half) == pytest.approx(127.5)
    # A set 10 levels brighter everywhere (none clipped) is 10 levels away.
    levels = np.random.default_rng(0).integers(20, 200, (8, 16, 16))
    assert intensity_distance(levels / 255, (levels + 10) / 255) == pytest.approx(10)
    # A pixel goes to its nearest level: a third of a level either way moves nothing (with
    # bin edges at k / 256 the darker set scored 0.44, the brighter one 0).
    real = levels.astype(np.float32) / np.float32(255)
    for shift in (-0.3, 0.3):
        assert intensity_distance(real, real + np.float32(shift / 255)) == 0.0


def test_encoder_trains_on_train_split_only(data, encoder):
    with pytest.raises(ValueError, match="training split only"):
        train_encoder(data, steps=1)
    assert weights_hash(encoder) == weights_hash(train_encoder(data.split("train"), steps=5))
    assert 0 <= conditioning_accuracy(encoder, data.split("test")) <= 1


def test_distribution_fidelity_recipe_and_sanity(data, encoder):
    real = data.split("train").images
    same = distribution_fidelity(encoder, real, real, kid_subsets=2)
    noise = np.random.default_rng(0).random(real.shape).astype(np.float32)
    far = distribution_fidelity(encoder, real, noise, kid_subsets=2)
    assert abs(same["fd_echo"]) < 1e-3 and far["fd_echo"] > 10 * max(same["fd_echo"], 1e-6)
    assert same["precision"] == same["recall"] == 1.0
    assert far["kid_echo_mean"] > same["kid_echo_mean"]
    assert same["weights_hash"] == weights_hash(encoder) and same["extractor"] == "echo-encoder"
    assert (same["resolution"], same["n_real"], same["reference_split"]) == (32, len(real), "train")


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_distribution_fidelity_encodes_each_set_once(data, encoder):
    """Encoded once for FD, KID and precision / recall, the values are those of torchmetrics
    with the encoder as its feature extractor on the images; given the real features, the
    real images are not encoded at all."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real = data.split("train").images
    noise = np.random.default_rng(0).random(real.shape).astype(np.float32)
    batches = []
    hook = encoder.register_forward_hook(lambda m, args, out: batches.append(len(args[0])))
    try:
        result = distribution_fidelity(encoder, real, noise, kid_subsets=2)
        assert sum(batches) == len(real) + len(noise)
        batches.clear()
        given = distribution_fidelity(
            encoder, real, noise, kid_subsets=2, real_features=features(encoder, real)
        )
        assert sum(batches) == 2 * len(real)  # the features given here, and the noise's
        both = {
            "real_features": features(encoder, real),
            "synthetic_features": features(encoder, noise),
        }
        batches.clear()
        assert distribution_fidelity(encoder, real, noise, kid_subsets=2, **both) == result
        assert batches == []  # both sets' features given: nothing encoded
        with pytest.raises(ValueError, match="3 real features for"):
            distribution_fidelity(encoder, real, noise, real_features=features(encoder, real[:3]))
        with pytest.raises(ValueError, match="3 synthetic features for"):
            distribution_fidelity(
                encoder, real, noise, synthetic_features=both["real_features"][:3]
            )
    finally:
        hook.remove()
    assert given == result
    fid = FrechetInceptionDistance(feature=encoder, normalize=True)
    kid = KernelInceptionDistance(feature=encoder, subsets=2, subset_size=len(real))
    for metric in (fid, kid):
        metric.update(torch.from_numpy(real)[:, None], real=True)
        metric.update(torch.from_numpy(noise)[:, None], real=False)
    torch.manual_seed(0)  # distribution_fidelity's KID seed
    kid_mean, kid_std = kid.compute()
    assert result["fd_echo"] == pytest.approx(float(fid.compute()), rel=1e-9)
    assert result["kid_echo_mean"] == pytest.approx(float(kid_mean), rel=1e-9)
    assert result["kid_echo_std"] == pytest.approx(float(kid_std), rel=1e-9)


def test_kid_subsets_are_seeded(data, encoder):
    # Subsets of half the real and the noise images: another draw gives another value.
    real = data.split("train").images
    noise = np.random.default_rng(0).random(real.shape).astype(np.float32)
    kid = {"kid_subsets": 3, "kid_subset_size": len(real) // 2}
    torch.manual_seed(123)
    first = distribution_fidelity(encoder, real, noise, **kid)
    after = torch.rand(1)
    torch.manual_seed(456)
    again = distribution_fidelity(encoder, real, noise, **kid)
    other = distribution_fidelity(encoder, real, noise, seed=1, **kid)
    assert first["kid_echo_mean"] == again["kid_echo_mean"] != other["kid_echo_mean"]
    torch.manual_seed(123)
    distribution_fidelity(encoder, real, noise, **kid)
    assert torch.equal(torch.rand(1), after)  # the caller's random stream is untouched


def test_encoder_training_jitters_every_batch_with_its_own_draws(data, encoder):
    seen = []

    def augment(batch, gen):
        seen.append((tuple(batch["image"].shape), gen.initial_seed()))
        return {"image": batch["image"].flip(-1)}

    jittered = train_encoder(data.split("train"), steps=5, seed=0, augment=augment)
    n = len(data.split("train"))
    assert seen == [((min(32, n), 1, 32, 32), 1)] * 5  # the stream of seed + 1, every step
    assert weights_hash(jittered) != weights_hash(encoder)


@pytest.mark.slow
def test_the_encoder_tells_view_and_phase_apart_on_unseen_patients():
    # The judge of conditioning fidelity must recognise real images first: the controls
    # preset's phantom at 64 px, 300 steps with the classifier's augmentation.
    from downstream.classification import augmentation

    real = make_phantom(40, 64, seed=0)
    model = train_encoder(real.split("train"), steps=300, augment=augmentation(64))
    assert conditioning_accuracy(model, real.split("test")) >= 0.85


def test_conditioning_accuracies_by_hand():
    # Asked for 2CH-ED, 2CH-ES, 4CH-ED, 4CH-ES (a fifth image, 3CH, has no class and is
    # skipped); the encoder sees 2CH-ED, 2CH-ED, 2CH-ED, 4CH-ES. View x phase: rows 0 and 3
    # right (0.5); view: rows 0, 1, 3 (0.75); phase: rows 0, 2, 3 (0.75).
    import torch

    seen = [("2CH", "ED"), ("2CH", "ED"), ("2CH", "ED"), ("4CH", "ES")]

    class Fixed:
        def logits(self, x):
            return torch.eye(4)[[CLASSES.index(c) for c in seen[: len(x)]]]

    data = make_phantom(2, 16, seed=0).subset(np.arange(5))
    data.meta["view"] = ["2CH", "2CH", "4CH", "4CH", "3CH"]
    data.meta["phase"] = ["ED", "ES", "ED", "ES", "ED"]
    want = {"view_phase": 0.5, "view": 0.75, "phase": 0.75}
    assert conditioning_accuracies(Fixed(), data) == want
    assert conditioning_accuracy(Fixed(), data) == 0.5
    unlabelled = data.subset(np.array([4]))
    assert all(np.isnan(v) for v in conditioning_accuracies(Fixed(), unlabelled).values())


def test_conditioning_from_the_features_computed_for_fd(data, encoder):
    """Given the images' features (those FD used), the encoder's head judges them: the
    accuracies of encoding the images again, without encoding them."""
    test = data.split("test")
    test.meta.loc[test.meta.index[0], "view"] = "3CH"  # no class: left out of both
    feats = features(encoder, test.images)
    encoded = []
    hook = encoder.register_forward_hook(lambda m, args, out: encoded.append(len(args[0])))
    try:
        given = conditioning_accuracies(encoder, test, feats)
        assert encoded == []
        assert given == conditioning_accuracies(encoder, test)
        assert conditioning_accuracy(encoder, test, feats) == given["view_phase"]
        with pytest.raises(ValueError, match="2 synthetic features for"):
            conditioning_accuracies(encoder, test, feats[:2])
    finally:
        hook.remove()
