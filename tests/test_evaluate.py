"""Sample metrics: the Fréchet distance against closed forms, and the classifier's accuracy (slow)."""
import pytest
import torch

from minidiff.evaluate import evaluate_samples, frechet_distance, train_classifier, MNISTClassifier
from minidiff.data import load_mnist


def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(f, f)) < 1e-6
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    assert frechet_distance(f, f + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # S2 = a^2 S1 commutes with S1, so Tr((S1 S2)^(1/2)) = a Tr(S1): FD = (1-a)^2 (|mu|^2 + Tr S1).
    a = 3.0
    S1, mu = torch.cov(f.T), f.mean(0)
    assert frechet_distance(f, a * f) == pytest.approx(float((1 - a) ** 2 * (mu @ mu + torch.trace(S1))), rel=1e-6)


def test_metrics_on_real_digits_with_a_small_classifier():
    x, y = load_mnist(train=True)
    clf = train_classifier(x[:3000], y[:3000], epochs=2, progress=False)
    held_out = 3000 + torch.randperm(57000, generator=torch.Generator().manual_seed(1))[:500]
    imgs, labels = x[held_out].unsqueeze(1).float() / 255, y[held_out]   # real digits the classifier never saw
    m = evaluate_samples(clf, imgs, labels)
    wrong = evaluate_samples(clf, imgs, (labels + 1) % 10)
    assert m.class_accuracy > 0.8 and wrong.class_accuracy < 0.1
    assert m.mean_confidence > wrong.mean_confidence
    assert m.frechet < 1.5 * m.frechet_real_floor + 1.0      # real training digits score at the real-data floor
    noise = evaluate_samples(clf, torch.rand(500, 1, 28, 28), labels)
    assert noise.frechet > 10 * m.frechet


@pytest.mark.slow
def test_full_classifier_reaches_98_5_percent():
    clf = train_classifier(*load_mnist(train=True), progress=False)
    xt, yt = load_mnist(train=False)
    from minidiff.evaluate import accuracy
    assert accuracy(clf, xt.unsqueeze(1).float() / 255, yt) >= 0.985
