"""Measuring samples: two independent MNIST classifiers, class accuracy with its interval, confidence, and a Fréchet
distance beside its real-data floor.

The judges are trained by the project itself on the MNIST training set, once per machine, and cached with their test
accuracy (default_judges_dir):
a small CNN (the one whose features the Fréchet distance uses; >= 99 % on the test set) and, to cross-check it, an
MLP on the raw pixels, built differently on purpose (no convolutions, no augmentation). A third, the far judge
(far_judge), is the CNN trained on digits low-passed by §1.10's filter: it reads hybrid images as seen from afar,
which the first cannot (it calls most blurred digits an 8). For a batch of generated digits we report
  - class accuracy: the fraction the CNN assigns to the digit that was asked for, with its 95 % Wilson interval
    (Wilson 1927), and the same fraction by the MLP;
  - mean confidence: the CNN's mean probability for that digit (for unconditional samples: for its own best guess);
  - Fréchet distance (Heusel et al. 2017, the "FID" formula) between the CNN's penultimate features of the samples
    and of real test digits:  ||mu_s - mu_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2)),
    printed beside the "real-data floor": the same distance for as many real training digits, which is what a
    generator that reproduced its training data perfectly would score. Both are averaged over `repeats` random
    draws of the real digits, with their spread: the distance of a few hundred samples moves by several points
    with the draw alone.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import atomic_save, hold, load_mnist, load_verified, release
from .guidance import gaussian_blur


class MNISTClassifier(nn.Module):
    """conv(32)-BN-ReLU - maxpool - conv(64)-BN-ReLU - maxpool - fc(128) - fc(10); features = the 128-d layer.
    About 4 M multiply-adds per digit."""

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


class MNISTMLP(nn.Module):
    """The second judge: 784 -> 512 -> 512 -> 10 on the raw pixels, ReLU and dropout 0.2; no convolutions."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)                                    # (B, 10) logits


# How each judge is trained (the cache records it: a cache made another way is retrained). Adam, batch 64, the rate
# decayed linearly to 0; `shift`: each training digit moved by up to that many pixels (the CNN's augmentation);
# `blur`: (kernel size, sigma) of the Gaussian low-pass every digit goes through, in training and in its test (the far
# judge: §1.10's filter, kernel 33, sigma 2).
JUDGES_ENV = "MINIDIFF_JUDGES"
RECIPES = {"cnn": dict(epochs=3, lr=1e-3, shift=2, seed=0), "mlp": dict(epochs=3, lr=1e-3, shift=0, seed=1),
           "far": dict(epochs=1, lr=1e-3, shift=2, blur=(33, 2.0), seed=2)}
JUDGES = {"cnn": MNISTClassifier, "mlp": MNISTMLP, "far": MNISTClassifier}


def seen(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, 1, 28, 28) digits in [0, 1] as the `kind` judge sees them: low-passed by its recipe's blur, else as is."""
    blur = RECIPES[kind].get("blur")
    return gaussian_blur(x, *blur) if blur else x


def shifted(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) images, each moved by a random whole number of pixels in [-shift, shift] along each axis, zeros
    filling in (the classic MNIST augmentation): an affine grid of pure translations, sampled at the nearest pixel."""
    B, _, H, W = x.shape
    d = torch.randint(-shift, shift + 1, (B, 2), generator=generator, device=x.device).to(x.dtype)   # (B, 2) px
    theta = torch.zeros(B, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = 2.0 * d / torch.tensor([W, H], device=x.device, dtype=x.dtype)   # pixels -> [-1, 1] units
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)                  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, kind: str = "cnn", epochs: Optional[int] = None,
                     batch_size: int = 64, device: torch.device | str = "cpu", progress: bool = True,
                     bf16: bool = False) -> nn.Module:
    """A judge trained by RECIPES[kind] (epochs overrides its epochs). images: (N, 28, 28) uint8; labels (N,) int64.
    Cross-entropy, Adam with the rate decayed linearly to 0 over the run. bf16: how to run, not what to train (so not
    in the recipe): the forward autocast to bfloat16 in the NHWC layout, about 2x as fast where the hardware computes
    bf16 (the judge is used in float32 either way)."""
    recipe = RECIPES[kind]
    epochs = epochs or recipe["epochs"]
    layout = torch.channels_last if bf16 else torch.contiguous_format
    g = torch.Generator(device=device).manual_seed(recipe["seed"])
    torch.manual_seed(recipe["seed"])
    model = JUDGES[kind]().to(device, memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], fused=True)
    x_all = _batched(lambda x: seen(x, kind), images.to(device).unsqueeze(1).float() / 255.0)   # (N, 1, 28, 28)
    labels = labels.to(device)
    steps = images.shape[0] // batch_size
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / (epochs * steps))
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(images.shape[0], generator=g, device=device)
        for i in tqdm(range(steps), desc=f"{kind} classifier epoch {epoch + 1}/{epochs}", leave=False,
                      disable=None if progress else True):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = x_all[idx]                                                       # (B, 1, 28, 28)
            if recipe["shift"]:                                  # after the blur (the same as before it, but at the edges)
                x = shifted(x, recipe["shift"], g)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x.contiguous(memory_format=layout)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay.step()
    return model.to(memory_format=torch.contiguous_format).eval()


def load_or_train_classifier(path: Path | str, device: torch.device | str = "cpu", kind: str = "cnn",
                             progress: bool = True, bf16: bool = False) -> nn.Module:
    """The judge cached at `path`, or trained by RECIPES[kind], measured on the test set and cached (atomically) on
    first use; a cache trained another way is retrained. The model's `test_accuracy` attribute says how good it is.
    One process trains a judge: another that needs it meanwhile (`make demo` runs two at once) waits for it. bf16:
    as train_classifier's."""
    path = Path(path)
    model = _cached(path, kind)
    if model is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = hold(path.with_name(path.name + ".lock"), wait=True)
        try:
            model = _cached(path, kind)                          # trained by the process we waited for?
            if model is None:
                model = train_classifier(*load_mnist(train=True), kind=kind, device=device, progress=progress,
                                         bf16=bf16)
                test_x, test_y = load_mnist(train=False)
                model.test_accuracy = accuracy(model, seen(test_x.unsqueeze(1).float() / 255.0, kind), test_y)
                atomic_save({"model": model.state_dict(), "recipe": {**RECIPES[kind], "kind": kind},
                             "test_accuracy": model.test_accuracy}, path)
        finally:
            release(lock)
    return model.to(device).eval()


def _cached(path: Path, kind: str) -> Optional[nn.Module]:
    """The `kind` judge cached at `path` (on the CPU), or None when there is none or it was trained another way; a
    damaged cache is a one-line error."""
    if not path.exists():
        return None
    fix = "delete it to retrain the classifier"
    cached = load_verified(path, fix)                            # a flipped bit: a CRC mismatch, one line
    if not (isinstance(cached, dict) and cached.get("recipe") == {**RECIPES[kind], "kind": kind}):
        return None
    model = JUDGES[kind]()
    try:
        model.load_state_dict(cached["model"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{path} does not hold the {kind} judge's weights ({str(e).splitlines()[0]}); {fix}") from None
    if not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
        raise ValueError(f"{path} holds non-finite weights; {fix}")
    model.test_accuracy = cached["test_accuracy"]
    return model


@dataclass(frozen=True)
class Judges:
    """The two classifiers that judge samples: the CNN (accuracy, confidence, Fréchet features) and the MLP."""

    classifier: MNISTClassifier
    second: MNISTMLP

    def __str__(self) -> str:
        return (f"judged by a CNN with {100 * self.classifier.test_accuracy:.2f} % test accuracy, cross-checked by an "
                f"MLP with {100 * self.second.test_accuracy:.2f} %")


def default_judges_dir() -> Path:
    """Where the judges are cached, once per machine: $MINIDIFF_JUDGES, else $XDG_CACHE_HOME/minidiff/judges
    (~/.cache/minidiff/judges by default)."""
    if os.environ.get(JUDGES_ENV):
        return Path(os.environ[JUDGES_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "minidiff" / "judges"


def judge(kind: str, folder: Path | str | None = None, device: torch.device | str = "cpu", progress: bool = True,
          bf16: bool = False) -> nn.Module:
    """The `kind` judge of RECIPES ("cnn", "mlp" or "far"), cached in `folder` (default: default_judges_dir()) as
    mnist_<kind>.pt; trained there on first use (bf16: as train_classifier's)."""
    folder = Path(folder) if folder is not None else default_judges_dir()
    return load_or_train_classifier(folder / f"mnist_{kind}.pt", device, kind, progress, bf16)


def judges(folder: Path | str | None = None, device: torch.device | str = "cpu", progress: bool = True,
           bf16: bool = False) -> Judges:
    """Both judges, the CNN and the MLP (judge)."""
    return Judges(judge("cnn", folder, device, progress, bf16), judge("mlp", folder, device, progress, bf16))


def far_judge(folder: Path | str | None = None, device: torch.device | str = "cpu", progress: bool = True,
              bf16: bool = False) -> MNISTClassifier:
    """The far judge (RECIPES["far"]): reads (B, 1, 28, 28) digits as §1.10's low-pass filter shows them, i.e. from
    afar. Its test_accuracy is on low-passed test digits."""
    return judge("far", folder, device, progress, bf16)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """images: (N, 1, 28, 28) in [0, 1]; labels (N,). Fraction classified as the given label."""
    dev = next(classifier.parameters()).device
    logits = _batched(classifier, images.to(dev).float())
    return (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a binomial proportion (Wilson 1927): p = successes / n,
    (p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n). Unlike p +- z sqrt(p (1 - p) / n) it stays
    inside [0, 1] and is not empty at p = 1."""
    p = successes / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


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
    class_accuracy: Optional[float]       # fraction the CNN classifies as the requested digit (None: unconditional)
    accuracy_interval: Optional[tuple]    # its 95 % Wilson interval
    second_accuracy: Optional[float]      # the same fraction by the MLP
    mean_confidence: float                # mean CNN probability of the requested digit (or of its best guess)
    frechet: float                        # Fréchet distance of CNN features, samples vs real test digits
    frechet_std: float                    # its spread over the draws of real digits
    frechet_real_floor: float             # the same for n real training digits
    floor_std: float

    def __str__(self) -> str:
        head = f"{self.n} samples: "
        if self.class_accuracy is not None:
            lo, hi = self.accuracy_interval
            head += (f"class accuracy {100 * self.class_accuracy:.1f} % (95 % interval {100 * lo:.1f}-{100 * hi:.1f} "
                     f"%" + (f"; the MLP: {100 * self.second_accuracy:.1f} %" if self.second_accuracy is not None
                             else "") + "), ")
        return (head + f"mean confidence {self.mean_confidence:.3f}, Fréchet distance {self.frechet:.1f} ± "
                f"{self.frechet_std:.1f} (real-data floor at this sample count: {self.frechet_real_floor:.1f} ± "
                f"{self.floor_std:.1f})")


@torch.no_grad()
def evaluate_samples(classifier: MNISTClassifier | Judges, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                     repeats: int = 5) -> SampleMetrics:
    """Metrics for generated digits. images: (N, 1, 28, 28) in [0, 1]; labels: (N,) the requested digits, or None
    for unconditional samples. classifier: the CNN, or both Judges (then the MLP cross-checks the accuracy).
    The distance compares the samples with N random test digits; the floor compares N random *training* digits
    (what a generator that learned its training data perfectly would produce) with the same test digits; each is
    the mean over `repeats` draws of those real digits, with its standard deviation."""
    second = classifier.second if isinstance(classifier, Judges) else None
    classifier = classifier.classifier if isinstance(classifier, Judges) else classifier
    dev = next(classifier.parameters()).device
    N = images.shape[0]
    test_x, _ = load_mnist(train=False)
    train_x, _ = load_mnist(train=True)
    if N > test_x.shape[0]:
        raise ValueError(f"at most {test_x.shape[0]} samples can be compared with the test set, got {N}")
    images = images.to(dev).float()
    probs = _batched(lambda x: classifier(x).softmax(1), images).cpu()       # (N, 10)
    f_samples = _batched(classifier.features, images).cpu()                  # (N, 128)
    g = torch.Generator().manual_seed(0)
    pick = lambda x: x[torch.randperm(x.shape[0], generator=g)[:N]].unsqueeze(1).float().div(255.0).to(dev)  # noqa
    distances, floors = [], []
    for _ in range(repeats):
        f_ref = _batched(classifier.features, pick(test_x)).cpu()             # (N, 128) each
        distances.append(frechet_distance(f_samples, f_ref))
        floors.append(frechet_distance(_batched(classifier.features, pick(train_x)).cpu(), f_ref))
    distances, floors = torch.tensor(distances), torch.tensor(floors)
    spread = lambda v: float(v.std()) if len(v) > 1 else 0.0                   # noqa: E731
    if labels is None:
        hits = acc = interval = second_acc = None
        confidence = probs.max(1).values.mean().item()
    else:
        labels = labels.cpu()
        hits = int((probs.argmax(1) == labels).sum())
        acc, interval = hits / N, wilson_interval(hits, N)
        second_acc = accuracy(second, images, labels) if second is not None else None
        confidence = probs[torch.arange(N), labels].mean().item()
    return SampleMetrics(n=N, class_accuracy=acc, accuracy_interval=interval, second_accuracy=second_acc,
                         mean_confidence=confidence, frechet=float(distances.mean()), frechet_std=spread(distances),
                         frechet_real_floor=float(floors.mean()), floor_std=spread(floors))
