"""Probabilities from a network: computed in eval mode, whatever mode the caller's network is in."""

import numpy as np
import pytest
import torch

from doodle.model.evaluate import predict_proba
from doodle.model.finetune import extract_features
from doodle.model.net import DoodleNet, NetConfig, load_checkpoint, load_replay
from doodle.model.registry import bundled_checkpoint

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


def test_a_drawing_and_its_mirror_image_get_the_same_answer():
    net, _, _ = load_checkpoint(bundled_checkpoint())
    drawings = load_replay(bundled_checkpoint())["images"].numpy()[::100]
    mirrored = drawings.reshape(-1, 28, 28)[:, :, ::-1].reshape(-1, 784)

    np.testing.assert_allclose(predict_proba(net, mirrored), predict_proba(net, drawings), atol=1e-6)
    alone = predict_proba(net, drawings, mirror=False), predict_proba(net, mirrored, mirror=False)
    assert np.abs(alone[0] - alone[1]).max() > 0.05  # the network alone does not see them alike
    np.testing.assert_allclose(predict_proba(net, drawings), (alone[0] + alone[1]) / 2, atol=1e-6)
