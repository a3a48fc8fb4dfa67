"""Batched augmentation (downstream.augment): MONAI's distributions, drawn per sample and
applied to a whole batch; label maps warped with their image by nearest neighbours."""

import math

import numpy as np
import pytest
import torch

from benchmark.runtime import child_seed
from downstream.augment import BatchAugment, _contrast
from downstream.loading import ORDER_STREAM, seeded_loader
from downstream.segmentation import augmentation


def _batch(n=6, size=16):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(n, 1, size, size, generator=gen)
    label = torch.randint(0, 4, (n, 1, size, size), generator=gen).float()
    return {"image": image, "label": label}


def test_seeded_draws_repeat_and_differ_by_seed():
    aug, batch = augmentation(16), _batch()
    a = aug(batch, torch.Generator().manual_seed(1))
    b = aug(batch, torch.Generator().manual_seed(1))
    c = aug(batch, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
    assert not torch.equal(a["image"], c["image"])


def test_label_maps_stay_labels_and_move_with_their_image():
    """A bright square in the image and label 3 on the same square: after the warp the
    label is still a class index everywhere and covers the same pixels as the square."""
    size = 32
    image = torch.zeros(8, 1, size, size)
    image[:, :, 10:20, 12:22] = 1.0
    label = image * 3
    aug = BatchAugment(warp=("image", "label"), nearest=("label",), p_affine=1.0, p_gamma=0)
    out = aug({"image": image, "label": label}, torch.Generator().manual_seed(0))
    assert set(out["label"].unique().tolist()) <= {0.0, 3.0}
    moved = out["label"] == 3
    assert not torch.equal(out["label"], label)  # every sample was warped
    # Where the label says "square" the bilinear image is mostly bright, elsewhere mostly dark.
    assert out["image"][moved].mean() > 0.8 and out["image"][~moved].mean() < 0.05


def test_a_zero_range_warp_is_the_identity():
    aug = BatchAugment(
        warp=("image", "label"),
        nearest=("label",),
        p_affine=1.0,
        rotate=0.0,
        translate=0.0,
        scale=0.0,
        p_gamma=0,
    )
    batch = _batch()
    out = aug(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["image"], batch["image"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["label"], batch["label"], rtol=0, atol=0)


def test_affine_draws_stay_in_monai_ranges():
    """theta inverts x' = S R x + t: recover S, R and t and check DE's ranges."""
    aug = augmentation(64)
    theta = aug._theta(2000, torch.Generator().manual_seed(0)).double()
    forward = torch.linalg.inv(theta[:, :, :2])
    shift = -(forward @ theta[:, :, 2:]).squeeze(-1)
    sx, sy = forward[:, 0].norm(dim=1), forward[:, 1].norm(dim=1)
    angle = torch.atan2(forward[:, 1, 0], forward[:, 1, 1])
    assert sx.min() >= 0.9 - 1e-6 and sx.max() <= 1.1 + 1e-6
    assert sy.min() >= 0.9 - 1e-6 and sy.max() <= 1.1 + 1e-6
    assert angle.abs().max() <= math.radians(10) + 1e-6
    assert angle.abs().max() > math.radians(9)  # the whole range is drawn
    # ±10 % of the side = ±0.2 in affine_grid's [-1, 1] coordinates
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.abs().max() > 0.19


def test_probabilities_pick_the_share_of_samples():
    batch = {"image": torch.rand(4000, 1, 4, 4)}
    out = BatchAugment(p_affine=0.8, p_gamma=0)(batch, torch.Generator().manual_seed(0))
    changed = (out["image"] != batch["image"]).flatten(1).any(1).float().mean()
    assert abs(float(changed) - 0.8) < 0.03
    none = BatchAugment(p_affine=0.0, p_gamma=0.0)(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(none["image"], batch["image"], rtol=0, atol=0)


def test_contrast_is_monai_gamma_on_the_min_max_range():
    image = torch.tensor([0.0, 0.5, 1.0, 2.0]).view(1, 1, 2, 2)
    # ((v - 0) / 2) ** 2 * 2 + 0 -> 0, 0.125, 0.5, 2
    out = _contrast(image, torch.tensor([2.0]), torch.tensor([True]))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.125, 0.5, 2.0]))
    kept = _contrast(image, torch.tensor([2.0]), torch.tensor([False]))
    torch.testing.assert_close(kept, image, rtol=0, atol=0)


def test_intensity_scale_multiplies_the_image():
    image = torch.ones(2000, 1, 2, 2)
    aug = BatchAugment(p_affine=0, p_intensity=1.0, intensity=0.3, p_gamma=0)
    factors = aug({"image": image}, torch.Generator().manual_seed(0))["image"][:, 0, 0, 0]
    assert factors.min() >= 0.7 and factors.max() <= 1.3 and factors.std() > 0.15


def test_loader_repeats_order_and_draws_for_a_seed():
    items = [{"image": np.full((1, 8, 8), i, np.float32), "label": i} for i in range(10)]
    aug = BatchAugment(p_gamma=0)

    def epoch(seed):
        return [b["image"] for b in seeded_loader(items, aug, 4, True, seed)]

    for a, b in zip(epoch(3), epoch(3)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(epoch(3), epoch(4)))
    ordered = [b["label"].tolist() for b in seeded_loader(items, None, 4, False, 0)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_loader_streams_are_no_other_seeds_streams():
    """The order and the augmentation draws of seed s are neither each other's nor any
    stream of seeds near s, nor the model initialisation's (``torch.manual_seed(s)``). With
    ``seed`` and ``seed + 1`` the augmentation of seed s was the order of seed s + 1."""
    items = [{"image": np.zeros((1, 4, 4), np.float32)} for _ in range(4)]
    states = {}
    for seed in range(8):
        seen = []

        def augment(batch, draws, seen=seen):
            seen.append(draws.get_state().clone())  # before the first draw
            return batch

        loader = seeded_loader(items, augment, 2, True, seed)
        states[seed, "order"] = loader.generator.get_state().clone()
        next(iter(loader))
        states[seed, "augment"] = seen[0]
        states[seed, "init"] = torch.Generator().manual_seed(seed).get_state()
    distinct = {bytes(state.numpy()) for state in states.values()}
    assert len(distinct) == len(states) == 24


def test_loader_batches_index_the_data_collated_once_on_its_device():
    """The same batches, in the same shuffled order, as a DataLoader collating each batch's
    items; with a device, the data is there before the first batch (``meta`` stands in for
    CUDA: no copy per step)."""
    from torch.utils.data import DataLoader

    rng = np.random.default_rng(0)
    items = [
        {
            "image": rng.random((1, 8, 8), dtype=np.float32),
            "label": int(i % 3),
            "text": rng.random(4),
        }
        for i in range(11)
    ]
    order = torch.Generator().manual_seed(child_seed(7, ORDER_STREAM))
    plain = DataLoader(items, batch_size=4, shuffle=True, generator=order)
    got = list(seeded_loader(items, None, 4, True, 7))
    assert len(got) == len(plain) == 3
    for a, b in zip(got, plain):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    on_device = next(iter(seeded_loader(items, None, 4, True, 7, device=torch.device("meta"))))
    assert all(v.device.type == "meta" for v in on_device.values())
    assert on_device["image"].shape == (4, 1, 8, 8)
    assert list(seeded_loader([], None, 4, False, 0)) == []


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(0.15, (1.05, 0.95), (0.05, 0.08)), (-0.17, (0.92, 1.08), (-0.09, 0.03))],
)
def test_the_warp_is_monais_affine(angle, scale, shift):
    """For fixed parameters, the batched warp equals MONAI's Affine (bilinear, zeros
    outside) with the parameters mapped as affine_theta's docstring says."""
    import torch.nn.functional as F
    from monai.transforms import Affine

    from downstream.augment import affine_theta

    side = 32
    image = torch.rand(1, side, side, generator=torch.Generator().manual_seed(0))
    theta = affine_theta(torch.tensor([angle]), torch.tensor([scale]), torch.tensor([shift]))
    grid = F.affine_grid(theta, [1, 1, side, side], align_corners=False)
    ours = F.grid_sample(image[None], grid, padding_mode="zeros", align_corners=False)[0]
    (sx, sy), (tx, ty) = scale, shift
    monai = Affine(
        rotate_params=angle,
        scale_params=(1 / sy, 1 / sx),
        translate_params=(-ty * side / sy, -tx * side / sx),
        padding_mode="zeros",
        mode="bilinear",
        image_only=True,
    )(image)
    torch.testing.assert_close(ours, torch.as_tensor(monai), atol=1e-5, rtol=0)


def test_intensity_and_contrast_are_monais_transforms():
    from monai.transforms import AdjustContrast, ScaleIntensity

    image = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 3 - 1
    gamma = torch.tensor([0.7, 1.4])
    ours = _contrast(image, gamma, torch.tensor([True, True]))
    for k in range(2):
        want = AdjustContrast(gamma=float(gamma[k]))(image[k])
        torch.testing.assert_close(ours[k], torch.as_tensor(want), atol=1e-6, rtol=1e-6)
    aug = BatchAugment(p_affine=0.0, p_intensity=1.0, p_gamma=0.0)
    gen = torch.Generator().manual_seed(2)
    scaled = aug({"image": image}, gen)["image"]
    factor = (scaled.flatten(1) / image.flatten(1)).mean(1)  # 1 + f per sample
    for k in range(2):
        want = ScaleIntensity(minv=None, maxv=None, factor=float(factor[k] - 1))(image[k])
        torch.testing.assert_close(scaled[k], torch.as_tensor(want), atol=1e-5, rtol=1e-5)
