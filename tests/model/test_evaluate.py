"""Probabilities from a network: computed in eval mode, whatever mode the caller's network is in."""

import numpy as np
import pytest
import torch

from doodle.model.evaluate import predict_proba
from doodle.model.finetune import extract_features
from doodle.model.net import DoodleNet, NetConfig

IMAGES = np.random.default_rng(0).integers(0, 256, (6, 784), dtype=np.uint8)


def state(net: DoodleNet) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in net.state_dict().items()}


@pytest.mark.parametrize("training", [True, False])
def test_predict_proba_answers_in_eval_mode_and_leaves_the_callers_mode(training):
    net = DoodleNet(NetConfig(num_classes=3, width=8)).train(training)
    before = state(net)

    proba = predict_proba(net, IMAGES)

    assert net.training == training
    np.testing.assert_array_equal(proba, predict_proba(net, IMAGES))  # no Dropout: the same answer twice
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert all(torch.equal(value, before[name]) for name, value in net.state_dict().items())  # BatchNorm untouched


@pytest.mark.parametrize("training", [True, False])
def test_extract_features_answers_in_eval_mode_and_leaves_the_callers_mode(training):
    net = DoodleNet(NetConfig(num_classes=3, width=8)).train(training)
    features = extract_features(net, IMAGES)
    assert net.training == training
    np.testing.assert_array_equal(features, extract_features(net, IMAGES))
