"""Measuring samples: an independent MNIST classifier, class accuracy, confidence and a Fréchet distance.

The classifier is a small CNN the project trains itself on the MNIST training set (one epoch) and caches. For a
batch of generated digits we report
  - class accuracy: the fraction the classifier assigns to the digit that was asked for,
  - mean confidence: the classifier's mean probability for that digit,
  - Fréchet distance (Heusel et al. 2017, the "FID" formula) between the classifier's penultimate features of the
    samples and of real test digits:  ||mu_s - mu_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2)),
    printed beside the "real-data floor": the same distance for as many real training digits, which is what a
    generator that reproduced its training data perfectly would score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import atomic_save, load_mnist


class MNISTClassifier(nn.Module):
    """conv(32)-BN-ReLU - maxpool - conv(64)-BN-ReLU - maxpool - fc(128) - fc(10); features = the 128-d layer.
    About 4 M multiply-adds per digit. One epoch on the 60k training digits must reach >= 98.5 % test accuracy
    (tests/test_evaluate.py, marked slow; the README quotes what it measured)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),    # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),   # (B, 64, 7, 7)
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),                               # (B, 128)
        )
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 28, 28) in [0, 1] -> (B, 128)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))                    # (B, 10) logits


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 1, batch_size: int = 64,
                     seed: int = 0, device: torch.device | str = "cpu", progress: bool = True) -> MNISTClassifier:
    """Adam 1e-3 decayed linearly to 0 over the run, cross-entropy. images: (N, 28, 28) uint8; labels (N,) int64."""
    g = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)
    model = MNISTClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = images.to(device), labels.to(device)
    steps = images.shape[0] // batch_size
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / (epochs * steps))
    for epoch in range(epochs):
        perm = torch.randperm(images.shape[0], generator=g, device=device)
        for i in tqdm(range(steps), desc=f"classifier epoch {epoch + 1}/{epochs}", disable=None if progress else True,
                      leave=False):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = images[idx].unsqueeze(1).float() / 255.0                         # (B, 1, 28, 28)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay.step()
    return model.eval()


def load_or_train_classifier(path: Path | str, device: torch.device | str = "cpu",
                             progress: bool = True) -> MNISTClassifier:
    """The cached classifier at `path`, trained (and cached atomically) on first use."""
    path = Path(path)
    model = MNISTClassifier()
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.to(device).eval()
        except Exception as e:
            raise ValueError(f"classifier cache {path} is damaged ({type(e).__name__}); delete it to retrain") from None
    model = train_classifier(*load_mnist(train=True), device=device, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(model.state_dict(), path)
    return model


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def accuracy(classifier: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """images: (N, 1, 28, 28) in [0, 1]; labels (N,). Fraction classified as the given label."""
    dev = next(classifier.parameters()).device
    logits = _batched(classifier, images.to(dev).float())
    return (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) for feature sets (N1, K) and (N2, K), in float64.
    Tr((S1 S2)^(1/2)) = sum of sqrt(eig(S1^(1/2) S2 S1^(1/2))), a symmetric matrix, so eigh suffices."""
    f1, f2 = f1.double(), f2.double()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    S1, S2 = torch.cov(f1.T), torch.cov(f2.T)                                   # (K, K)
    lam, V = torch.linalg.eigh(S1)
    S1_half = V @ torch.diag(lam.clamp(min=0).sqrt()) @ V.T
    tr_sqrt = torch.linalg.eigvalsh(S1_half @ S2 @ S1_half).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(S1) + torch.trace(S2) - 2 * tr_sqrt)


@dataclass(frozen=True)
class SampleMetrics:
    n: int
    class_accuracy: float      # fraction classified as the requested digit
    mean_confidence: float     # mean classifier probability of the requested digit
    frechet: float             # Fréchet distance of classifier features, samples vs real test digits
    frechet_real_floor: float  # the same for n real training digits

    def __str__(self) -> str:
        return (f"{self.n} samples: class accuracy {100 * self.class_accuracy:.1f} %, mean confidence "
                f"{self.mean_confidence:.3f}, Fréchet distance {self.frechet:.2f} (real-data floor at this "
                f"sample count: {self.frechet_real_floor:.2f})")


@torch.no_grad()
def evaluate_samples(classifier: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor,
                     seed: int = 0) -> SampleMetrics:
    """Metrics for generated digits. images: (N, 1, 28, 28) in [0, 1]; labels: (N,) the requested digits.
    The distance compares the samples with N random test digits; the floor compares N random *training* digits
    (what a generator that learned its training data perfectly would produce) with the same test digits."""
    dev = next(classifier.parameters()).device
    N = images.shape[0]
    test_x, _ = load_mnist(train=False)
    train_x, _ = load_mnist(train=True)
    if N > test_x.shape[0]:
        raise ValueError(f"at most {test_x.shape[0]} samples can be compared with the test set, got {N}")
    g = torch.Generator().manual_seed(seed)
    pick = lambda x: x[torch.randperm(x.shape[0], generator=g)[:N]].unsqueeze(1).float().div(255.0).to(dev)
    ref, floor = pick(test_x), pick(train_x)                                  # (N, 1, 28, 28) each
    images = images.to(dev).float()
    probs = _batched(lambda x: classifier(x).softmax(1), images).cpu()       # (N, 10)
    labels = labels.cpu()
    f_ref = _batched(classifier.features, ref).cpu()                          # (N, 128)
    return SampleMetrics(
        n=N,
        class_accuracy=(probs.argmax(1) == labels).float().mean().item(),
        mean_confidence=probs[torch.arange(N), labels].mean().item(),
        frechet=frechet_distance(_batched(classifier.features, images).cpu(), f_ref),
        frechet_real_floor=frechet_distance(_batched(classifier.features, floor).cpu(), f_ref),
    )
