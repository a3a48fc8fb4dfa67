import dataclasses
import json

import numpy as np
import pytest
import torch

from benchmark.__main__ import main
from benchmark.data.phantom import make_phantom
from downstream.classification import (
    ClassificationTask,
    build_model,
    class_indices,
    classification_metrics,
)
from downstream.training import fit


def test_metrics_by_hand():
    # 4 samples, 2 classes; predictions: 0,0,1,0 for labels 0,0,1,1
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    labels = torch.tensor([0, 0, 1, 1])
    m = classification_metrics(probs, labels, 2)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    # F1: class 0 P=2/3 R=1 -> 0.8; class 1 P=1 R=0.5 -> 2/3
    assert m["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    # AUROC of p(class 1): positives {0.8, 0.3} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered
    assert m["auroc"] == pytest.approx(0.75)
    assert np.isnan(classification_metrics(probs, torch.tensor([0, 0, 0, 0]), 2)["auroc"])


class ConstantLogits(torch.nn.Module):
    """Every image -> logits (0, ln 3): p(ED) = 0.25, p(ES) = 0.75."""

    def forward(self, x):
        return torch.tensor([0.0, float(np.log(3.0))]).expand(len(x), 2)


def test_selection_score_is_minus_the_validation_cross_entropy_by_hand():
    data = make_phantom(3, 32, seed=0)
    val = data.split("val")
    n_es = int((val.meta["phase"] == "ES").sum())
    expected = (n_es * np.log(0.75) + (len(val) - n_es) * np.log(0.25)) / len(val)
    cpu = torch.device("cpu")
    task = ClassificationTask("phase", augment=False)  # select_on "loss", the default
    accuracy, selection = task.validation(ConstantLogits(), val, cpu)
    assert accuracy == pytest.approx(n_es / len(val)) and selection == pytest.approx(expected)
    assert task.validate(ConstantLogits(), val, cpu) == accuracy  # the curve
    by_accuracy = ClassificationTask("phase", augment=False, select_on="accuracy")
    assert by_accuracy.validation(ConstantLogits(), val, cpu) == (accuracy, accuracy)
    with pytest.raises(ValueError, match="select_on must be one of"):
        ClassificationTask("phase", select_on="auroc")


def test_missing_labels_are_a_clear_error():
    data = make_phantom(3, 32, seed=0)
    data.meta.loc[0, "phase"] = None
    with pytest.raises(ValueError, match="needs labels in \\['ED', 'ES'\\]"):
        class_indices(data, "phase")


@pytest.mark.parametrize("target", ["phase", "view", "quality"])
def test_trains_and_evaluates(target, smoke_config):
    data = make_phantom(6, 32, seed=1)
    cfg = dataclasses.replace(smoke_config.downstream.cls, target=target)
    task = ClassificationTask(target, augment=True)
    train_cfg = dataclasses.replace(smoke_config.downstream.train, epochs=2)
    result = fit(
        build_model(cfg, 32),
        task,
        data.split("train"),
        data.split("val"),
        train_cfg,
        torch.device("cpu"),
        0,
        progress=False,
    )
    tested = task.evaluate(result.model, data.split("test"), torch.device("cpu"))
    metrics, per_sample = tested.metrics, tested.per_sample
    assert tested.per_patient is None
    assert {"accuracy", "balanced_accuracy", "f1_macro", "auroc"} <= set(metrics)
    assert len(per_sample) == len(data.split("test"))
    assert per_sample["accuracy"].mean() == pytest.approx(metrics["accuracy"])


def test_run_one_cls_cell_with_oracle_data(tmp_path, capsys):
    # In this process (the CLI's main): a subprocess would add 20 s of imports.
    argv = ["run", "--config", "smoke", "--task", "cls", "--mode", "oracle", "--ratio", "1"]
    argv += ["--protocol", "pretrain", "--out", str(tmp_path), "--json", "--quiet"]
    assert main(argv) == 0

    def strict(constant):  # NaN / Infinity are not JSON: the line must not hold them
        raise ValueError(f"non-JSON constant {constant}")

    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1], parse_constant=strict)
    assert out["cell_key"] == "cls-oracle-P_-r1-pretrain-f1-s0"
    assert {"accuracy", "f1_macro", "auroc", "epochs_to_95", "val_auc"} <= set(out["metrics"])
