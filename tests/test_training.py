"""``downstream.train.steps_per_epoch``: an epoch of a fixed number of optimiser steps,
whatever the training set's size (the equal-budget comparison of docs/RESULTS.md)."""

import dataclasses

import pytest
import torch

from benchmark.data.phantom import make_phantom
from downstream.segmentation import SegmentationTask, build_model
from downstream.training import BatchStream, fit


def loader(n: int, batch: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        list(range(n)), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0)
    )


def test_one_pass_per_epoch_by_default():
    stream = BatchStream(loader(10, 4))
    for _ in range(2):
        batches = list(stream.epoch())
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_fixed_steps_continue_the_pass_across_epochs():
    stream = BatchStream(loader(10, 4), steps=3)
    epochs = [list(stream.epoch()) for _ in range(4)]
    # A pass is the 2 full batches (the partial one of 2 items left out): every step
    # trains on 4 items, and the passes run on across the epochs' ends.
    assert [[len(b) for b in e] for e in epochs] == [[4, 4, 4]] * 4
    flat = [b for e in epochs for b in e]
    passes = [torch.cat(flat[i : i + 2]).tolist() for i in range(0, 12, 2)]
    assert all(len(set(p)) == 8 for p in passes)  # no item twice within a pass
    assert len({tuple(p) for p in passes}) == 6  # reshuffled each pass


def test_a_set_smaller_than_a_batch_is_one_batch_per_step():
    stream = BatchStream(loader(3, 4), steps=2)
    assert [sorted(b.tolist()) for b in stream.epoch()] == [[0, 1, 2]] * 2


class CountingTask(SegmentationTask):
    """Segmentation that counts the images each optimiser step trains on."""

    def __init__(self):
        super().__init__(augment=False)
        self.steps: list[int] = []

    def loss(self, model, batch, device):
        self.steps.append(len(batch["image"]))
        return super().loss(model, batch, device)


@pytest.mark.parametrize(("patients", "expected"), [(4, [8, 8, 8]), (8, [8, 8, 8])])
def test_fit_takes_the_same_steps_on_a_set_twice_as_large(smoke_config, patients, expected):
    data = make_phantom(patients + 2, 32, seed=0)
    train = data.split("train")
    cfg = dataclasses.replace(
        smoke_config.downstream.train, epochs=2, patience=3, batch_size=8, steps_per_epoch=3
    )
    task = CountingTask()
    model = build_model(smoke_config.downstream.seg)
    result = fit(model, task, train, data.split("val"), cfg, torch.device("cpu"), 0, progress=False)
    assert len(train) >= 8
    assert task.steps == expected * 2  # 3 full batches per epoch, 2 epochs
    assert result.steps == 6
    assert cfg.images_per_epoch(len(train)) == 24


def test_fit_by_passes_counts_the_batches_of_a_pass(smoke_config):
    data = make_phantom(6, 32, seed=0)
    train = data.split("train")
    cfg = dataclasses.replace(smoke_config.downstream.train, epochs=2, patience=3, batch_size=8)
    task = CountingTask()
    model = build_model(smoke_config.downstream.seg)
    result = fit(model, task, train, data.split("val"), cfg, torch.device("cpu"), 0, progress=False)
    per_pass = -(-len(train) // 8)
    assert result.steps == len(task.steps) == 2 * per_pass
    assert sum(task.steps) == 2 * len(train) == 2 * cfg.images_per_epoch(len(train))


def test_any_sized_iterable_of_batches_is_a_loader():
    # A task may hand fit its own list of batches (the reliability suite's toy tasks do).
    batches = [torch.zeros(2), torch.ones(2), torch.full((2,), 2.0)]
    assert [b[0].item() for b in BatchStream(batches).epoch()] == [0, 1, 2]
    stream = BatchStream(batches, steps=2)
    got = [b[0].item() for _ in range(2) for b in stream.epoch()]
    assert got == [0, 1, 2, 0]


class ScriptedTask(SegmentationTask):
    """Segmentation whose validation curve follows a script per epoch."""

    def __init__(self, curve: list[float], selection: list[float] | None):
        super().__init__(augment=False)
        self.curve, self.scripted, self.epoch = curve, selection, 0

    def validate(self, model, data, device):
        self.epoch += 1
        return self.curve[self.epoch - 1]


class ScriptedSelectionTask(ScriptedTask):
    """A scripted task with a selection score of its own (``validation``)."""

    def validation(self, model, data, device):
        score = self.validate(model, data, device)
        return score, self.scripted[self.epoch - 1]


@pytest.mark.parametrize(
    ("selection", "best", "epochs"),
    [
        (None, 1, 3),  # the curve: saturated at epoch 1, stopped after 2 epochs without gain
        ([-0.9, -0.5, -0.4, -0.6, -0.3, -0.7, -0.8], 5, 7),  # a smooth score: later epochs win
    ],
)
def test_early_stopping_follows_the_selection_score(smoke_config, selection, best, epochs):
    data = make_phantom(4, 32, seed=0)
    cfg = dataclasses.replace(smoke_config.downstream.train, epochs=7, patience=2, batch_size=8)
    task = (
        ScriptedTask([1.0] * 7, None)
        if selection is None
        else ScriptedSelectionTask([1.0] * 7, selection)
    )
    model = build_model(smoke_config.downstream.seg)
    device = torch.device("cpu")
    result = fit(model, task, data.split("train"), data.split("val"), cfg, device, 0, False)
    assert result.best_epoch == best and len(result.val_score) == epochs
    assert result.val_score == [1.0] * epochs  # the curve stays the task's metric


def test_fit_returns_the_best_epochs_weights(smoke_config):
    """The model comes back with the weights it had when validated at its best epoch, not
    the last epoch's."""
    import copy

    seen = []

    class Snapshots(ScriptedTask):
        def validate(self, model, data, device):
            seen.append(copy.deepcopy(model.state_dict()))
            return super().validate(model, data, device)

    data = make_phantom(4, 32, seed=0)
    cfg = dataclasses.replace(smoke_config.downstream.train, epochs=5, patience=10, batch_size=8)
    task = Snapshots([0.5, 0.9, 0.3, 0.2, 0.1], None)
    model = build_model(smoke_config.downstream.seg)
    device = torch.device("cpu")
    result = fit(
        model, task, data.split("train"), data.split("val"), cfg, device, 0, progress=False
    )
    assert result.best_epoch == 2 and len(seen) == 5
    weights = result.model.state_dict()
    assert all(torch.equal(weights[k], seen[1][k]) for k in weights)
    assert not all(torch.equal(weights[k], seen[-1][k]) for k in weights)
