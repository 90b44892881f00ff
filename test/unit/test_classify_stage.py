"""The classification stage: probabilities, the fitted input mixture in the cloud's frame,
deterministic answers, and clear errors for unusable clouds."""
import numpy as np
import pytest
import torch

from gmm_perception.models.pointnet_classifier import PointNetClassifier, \
    PointNetClassifierConfig
from gmm_perception.pipeline.configs import ClassifyConfig
from gmm_perception.pipeline.classify import Classifier

NAMES = ["a", "b", "c"]


def cloud(rng, n=600, centre=(5.0, -2.0, 0.5)):
    return (rng.normal(size=(n, 3)) * [0.3, 0.2, 0.4] + centre).astype(np.float32)


def test_gmcn_gives_probabilities_and_its_input_mixture_in_the_cloud_frame(gmcn):
    rng = np.random.default_rng(0)
    points = cloud(rng)
    result = Classifier(ClassifyConfig(classification_points=512), gmcn, NAMES, torch.device("cpu"))(points)
    assert result.scores.shape == (3,) and result.scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.label == NAMES[result.class_id] and result.class_id == result.scores.argmax()
    weights, means, covariances = result.mixture
    assert weights.shape == (16,) and means.shape == (16, 3) and covariances.shape == (16, 3, 3)
    assert weights.sum() == pytest.approx(1.0, abs=1e-4)
    # The fit describes the cloud where it is: its mean is the cloud's mean.
    np.testing.assert_allclose(weights @ means, points.mean(axis=0), atol=0.05)
    assert np.all(np.linalg.eigvalsh(covariances) > 0)


def test_the_same_cloud_gets_the_same_answer(gmcn):
    rng = np.random.default_rng(1)
    points = cloud(rng, n=512)  # exactly num_points: resampling keeps every point
    a = Classifier(ClassifyConfig(classification_points=512), gmcn, NAMES, torch.device("cpu"))(points)
    b = Classifier(ClassifyConfig(classification_points=512), gmcn, NAMES, torch.device("cpu"))(points[::-1].copy())
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_pointnet_has_no_mixture_and_unusable_clouds_are_errors():
    model = PointNetClassifier(PointNetClassifierConfig(num_classes=3)).eval()
    classifier = Classifier(ClassifyConfig(classification_points=256), model, NAMES, torch.device("cpu"))
    assert classifier(cloud(np.random.default_rng(2))).mixture is None
    with pytest.raises(ValueError, match="too few"):
        classifier(np.zeros((ClassifyConfig().min_points - 1, 3), np.float32))


def test_objects_below_min_points_are_refused_and_the_setting_is_applied():
    """The views the classifiers trained on hold 200 returns or more: smaller objects get no
    answer by default; a lower min_points lets them through."""
    model = PointNetClassifier(PointNetClassifierConfig(num_classes=3)).eval()
    small = cloud(np.random.default_rng(3), n=150)
    with pytest.raises(ValueError, match="150 points are too few to classify"):
        Classifier(ClassifyConfig(classification_points=256), model, NAMES,
                   torch.device("cpu"))(small)
    answer = Classifier(ClassifyConfig(classification_points=256, min_points=100), model, NAMES,
                        torch.device("cpu"))(small)
    assert answer.scores.shape == (3,) and abs(answer.scores.sum() - 1.0) < 1e-6
    with pytest.raises(ValueError, match="class names"):
        Classifier(ClassifyConfig(), model, ["only", "two"], torch.device("cpu"))
