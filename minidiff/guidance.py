"""Noise-estimator combinators (DESIGN §2): build a new eps_fn(x_t, t) from a conditional model.

A backbone exposes a *conditional* estimator

    model_fn(x_t, t, cond) -> (eps_hat, v_hat)     x_t (B, C, H, W), cond (B, ...) e.g. T5 embeddings or one-hots

whose estimate is a noise (DDPM) or a velocity (flow matching): every combinator is linear in it, so it serves both
unchanged.

and the functions here bind conditionings to it:

    conditional   eps_theta(x_t, t, c)
    cfg           [A.4]  eps_u + gamma (eps_c - eps_u)                               (Ho & Salimans 2022)
    limited       CFG at some steps only, the conditional estimate at the others     (Kynkaanniemi et al. 2024)
    autoguidance  eps_bad + w (eps - eps_bad): a model guided by a worse version of it (Karras et al. 2024)
    anagram       §1.8   mean_i view_i^-1( eps_i(view_i(x_t)) )                       (Geng et al. 2024, Visual Anagrams)
    hybrid        §1.10  lowpass(eps_1(x_t)) + highpass(eps_2(x_t))                   (Geng et al. 2024, Factorized Diffusion)

Each combinator makes exactly ONE batched call of model_fn per step, whatever the number of branches (views,
prompts, CFG's conditional/unconditional pair), so the cost is one forward of a bigger batch (autoguidance, which
combines two models, calls each once). With CFG, every branch's estimate is its own CFG estimate, and IF's
variance channels v_hat come from the conditional branch.

The classical denoiser of §1.2 (a Gaussian blur) lives here too: the hybrid's low-pass filter is the same blur.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

CondEpsFn = Callable[[torch.Tensor, int, torch.Tensor], "tuple[torch.Tensor, Optional[torch.Tensor]]"]


def _repeat(cond: torch.Tensor, B: int) -> torch.Tensor:
    """(1 or B, ...) -> (B, ...)."""
    return cond.expand(B, *cond.shape[1:]) if cond.shape[0] == 1 else cond


def conditional(model_fn: CondEpsFn, cond: torch.Tensor):
    """eps_fn with a fixed conditioning: eps_hat = eps_theta(x_t, t, cond). cond: (1 or B, ...)."""
    def eps_fn(x_t: torch.Tensor, t: int):
        return model_fn(x_t, t, _repeat(cond, x_t.shape[0]))
    return eps_fn


def cfg(model_fn: CondEpsFn, cond: torch.Tensor, uncond: torch.Tensor, gamma: float):
    """Classifier-free guidance [A.4] (Ho & Salimans 2022, eq. 6):

        eps_hat = eps_u + gamma * (eps_c - eps_u)

    gamma = 0 is the unconditional estimate, 1 the conditional one, > 1 trades diversity for fidelity. The same on a
    flow's velocity. The course's fall 2026 draft writes v_c + w (v_c - v_u): the same operation, gamma = w + 1
    (its w = 7 is gamma = 8). Both branches run as one forward of batch 2B. IF's variance channels v_hat come from
    the conditional branch (only eps is guided). cond, uncond: (1 or B, ...).
    """
    def eps_fn(x_t: torch.Tensor, t: int):
        (eps_hat, v_hat), = _branches(model_fn, [x_t], [cond], t, uncond, gamma)
        return eps_hat, v_hat
    return eps_fn


def limited(guided, plain, inside: Callable[[int | float], bool]):
    """Guidance in a limited interval (Kynkaanniemi et al. 2024): the `guided` estimate (e.g. cfg) at the steps t
    where inside(t), the `plain` one (e.g. conditional) at the others.

    Why it helps: at the highest noise levels the sample's overall shape is still being chosen, and strong guidance
    there pulls every sample of a class towards the same few shapes; later it only sharpens the class. Leaving the
    first steps unguided keeps most of the fidelity and much of the variety (README: Measured quality). A plain step
    is one forward of batch B instead of 2B.
    """
    def eps_fn(x_t: torch.Tensor, t: int | float):
        return (guided if inside(t) else plain)(x_t, t)
    return eps_fn


def autoguidance(eps_fn, bad_fn, w: float):
    """Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", §3):

        eps_hat = eps_bad + w (eps - eps_bad)

    CFG's formula [A.4] with a worse model of the same conditioning in the unconditional branch's place: here the
    same run's first snapshot, less trained (the paper's bad models are also smaller). w = 1 is the main model alone.
    Why it helps: both models err in the same directions, the bad one more, so their difference points away from
    those errors (half-formed strokes), toward the data. CFG's unconditional branch differs in more than its errors
    (it lacks the class), so CFG also pulls each sample toward its class's typical shape, at a cost in variety. This
    needs no class: it is the guidance a time-only model can have. The weights w and 1 - w sum to 1, so mixing the
    noises mixes the x0 estimates (Karras et al.'s D) alike, and velocities too. Two models: two forwards a step,
    not one batch. IF's v_hat comes from the main model.
    """
    def guided(x_t: torch.Tensor, t: int | float):
        (eps_hat, v_hat), (eps_bad, _) = eps_fn(x_t, t), bad_fn(x_t, t)
        return eps_bad + w * (eps_hat - eps_bad), v_hat
    return guided


def _branches(model_fn: CondEpsFn, xs: Sequence[torch.Tensor], conds: Sequence[torch.Tensor], t: int,
              uncond: Optional[torch.Tensor] = None, gamma: Optional[float] = None):
    """Run K branches (x_k, cond_k) as ONE forward of batch K*B (2*K*B with CFG) and split the result.

    With gamma given, branch k's estimate is the CFG estimate [A.4] eps_u,k + gamma (eps_c,k - eps_u,k), where
    eps_u,k = eps_theta(x_k, t, uncond); v_hat is the conditional branch's.
    Args:
        xs: K tensors (B, C, H, W); conds: K tensors (1 or B, ...); uncond: (1 or B, ...) or None.
    Returns:
        K pairs (eps_hat (B, C, H, W), v_hat (B, C', H, W) or None).
    """
    if (uncond is None) != (gamma is None):
        raise ValueError("classifier-free guidance needs both an unconditional embedding and gamma")
    K, B = len(xs), xs[0].shape[0]
    x_all = list(xs) + (list(xs) if gamma is not None else [])
    c_all = [_repeat(c, B) for c in conds] + ([_repeat(uncond, B)] * K if gamma is not None else [])
    eps, v = model_fn(torch.cat(x_all, dim=0), t, torch.cat(c_all, dim=0))      # (K*B or 2*K*B, C, H, W)
    eps_c = eps[:K * B].chunk(K)
    if gamma is not None:
        eps_u = eps[K * B:].chunk(K)
        eps_c = [u + gamma * (c - u) for c, u in zip(eps_c, eps_u)]              # [A.4] per branch
    v_c = [None] * K if v is None else v[:K * B].chunk(K)
    return list(zip(eps_c, v_c))


# ---------------------------------------------------------------------------------------------------------------
# Views (§1.8; Geng et al. 2024, Visual Anagrams): orthogonal transforms of the image, each with an inverse.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """An orthogonal transform of (B, C, H, W) tensors and its inverse.

    `apply` maps the image (and x_t) into the view; `invert` maps a noise estimate made in the view back.
    `invert_v` is what happens to IF's variance channels v_hat: they are per-pixel variances, so a view that
    moves pixels moves them, but a sign change must not flip them (v = -1 is beta_tilde, +1 is beta); it
    defaults to `invert`.
    """

    name: str
    apply: Callable[[torch.Tensor], torch.Tensor]
    invert: Callable[[torch.Tensor], torch.Tensor]
    invert_v: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def invert_variance(self, v: torch.Tensor) -> torch.Tensor:
        return (self.invert_v or self.invert)(v)


def identity() -> View:
    return View("identity", lambda x: x, lambda x: x)


def flip_vertical() -> View:
    """Upside down (the report's anagram view, §1.8): its own inverse."""
    return View("flip", lambda x: x.flip(-2), lambda x: x.flip(-2))


def flip_horizontal() -> View:
    return View("mirror", lambda x: x.flip(-1), lambda x: x.flip(-1))


def rotate(degrees: int) -> View:
    """Counter-clockwise rotation by 90, 180 or 270 degrees (square images for 90/270)."""
    if degrees not in (90, 180, 270):
        raise ValueError(f"rotate takes 90, 180 or 270 degrees, got {degrees}")
    k = degrees // 90
    return View(f"rot{degrees}", lambda x: x.rot90(k, (-2, -1)), lambda x: x.rot90(-k, (-2, -1)))


def negate() -> View:
    """x -> -x (colour inversion for images in [-1, 1]); the variance channels are left alone."""
    return View("negate", lambda x: -x, lambda x: -x, invert_v=lambda v: v)


def patch_permute(patch: int, seed: int = 0) -> View:
    """A jigsaw-like view: cut the image into patch x patch squares and shuffle them by a fixed random
    permutation (seeded, the same on every call); the inverse puts them back. H and W must be multiples of patch."""
    def split(x: torch.Tensor) -> torch.Tensor:           # (B, C, H, W) -> (B, C, N, patch, patch)
        B, C, H, W = x.shape
        if H % patch or W % patch:
            raise ValueError(f"patch_permute({patch}) needs H and W divisible by {patch}, got {H}x{W}")
        x = x.reshape(B, C, H // patch, patch, W // patch, patch).permute(0, 1, 2, 4, 3, 5)
        return x.reshape(B, C, -1, patch, patch)

    def merge(p: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, C = p.shape[:2]
        p = p.reshape(B, C, H // patch, W // patch, patch, patch).permute(0, 1, 2, 4, 3, 5)
        return p.reshape(B, C, H, W)

    def shuffle(x: torch.Tensor, inverse: bool) -> torch.Tensor:
        p = split(x)
        perm = torch.randperm(p.shape[2], generator=torch.Generator().manual_seed(seed))
        if inverse:
            perm = torch.argsort(perm)
        return merge(p[:, :, perm.to(x.device)], *x.shape[-2:])

    return View(f"patches{patch}", lambda x: shuffle(x, False), lambda x: shuffle(x, True))


PATCH_GRID = 4        # the jigsaw view cuts a square image into 4 x 4 patches (7 px on MNIST, 16 px on IF stage I)
VIEWS: dict[str, Callable[[int], View]] = {   # --view name -> the view for square images of a given side
    "flip": lambda size: flip_vertical(),
    "mirror": lambda size: flip_horizontal(),
    "rot90": lambda size: rotate(90),
    "rot180": lambda size: rotate(180),
    "rot270": lambda size: rotate(270),
    "negate": lambda size: negate(),
    "patches": lambda size: patch_permute(size // PATCH_GRID),
}


def view(name: str, size: int) -> View:
    """The view called `name` (a key of VIEWS) for square images of side `size` (only the jigsaw depends on it)."""
    if name not in VIEWS:
        raise ValueError(f"no view {name!r}: choose one of {', '.join(VIEWS)}")
    return VIEWS[name](size)


def anagram(model_fn: CondEpsFn, conds: Sequence[torch.Tensor], views: Sequence[View],
            uncond: Optional[torch.Tensor] = None, gamma: Optional[float] = None):
    """Visual anagrams (§1.8; Geng et al. 2024): one image that shows prompt i when seen through view i.

        eps_hat = mean_i  view_i^-1( eps_theta(view_i(x_t), t, c_i) )

    The report's two-view case is eps = (eps_1(x_t) + flip(eps_2(flip(x_t)))) / 2. Any number of views; with
    gamma given each eps_i is the CFG estimate [A.4]. All views (and their unconditional branches) run as ONE
    forward of batch V*B (2*V*B with CFG). v_hat (IF) is the mean of the inverted conditional v's.
    Args:
        conds: V conditionings (1 or B, ...); views: V views; uncond: (1 or B, ...) when gamma is given.
    """
    if len(conds) != len(views) or not views:
        raise ValueError(f"anagram needs one conditioning per view, got {len(conds)} and {len(views)}")

    def eps_fn(x_t: torch.Tensor, t: int):
        outs = _branches(model_fn, [view.apply(x_t) for view in views], conds, t, uncond, gamma)
        eps_hat = torch.stack([view.invert(e) for view, (e, _) in zip(views, outs)]).mean(0)   # (B, C, H, W)
        if outs[0][1] is None:
            return eps_hat, None
        return eps_hat, torch.stack([view.invert_variance(v) for view, (_, v) in zip(views, outs)]).mean(0)
    return eps_fn


# ---------------------------------------------------------------------------------------------------------------
# Low/high-pass filters: the classical denoiser (§1.2) and hybrid images (§1.10).
# ---------------------------------------------------------------------------------------------------------------

def gaussian_kernel1d(kernel_size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """(kernel_size,) normalized samples of exp(-u^2 / (2 sigma^2)) at u = -(k-1)/2 .. (k-1)/2."""
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise ValueError(f"the Gaussian kernel needs an odd size >= 1 and sigma > 0, got {kernel_size}, {sigma}")
    u = torch.arange(kernel_size, device=device, dtype=torch.float64) - (kernel_size - 1) / 2
    k = torch.exp(-0.5 * (u / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def blur_matrix(n: int, k: torch.Tensor) -> torch.Tensor:
    """The 1-D blur of a length-n signal by the odd kernel k (reflect padding) as an (n, n) matrix M, (M v)_i =
    sum_u k_u v_(i+u), the indices past an end reflected back in. Column j is the blur of the unit impulse e_j."""
    pad = k.numel() // 2
    impulses = F.pad(torch.eye(n, dtype=k.dtype, device=k.device).unsqueeze(1), (pad, pad), mode="reflect")
    return F.conv1d(impulses, k.view(1, 1, -1)).squeeze(1).T                       # (n, n): row j blurred e_j, so .T


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur with reflect padding (what torchvision's gaussian_blur computes).
    The classical denoiser of §1.2 and the low-pass filter of §1.10.

    Separable means a matrix on each side: blur(x) = M_H x M_W^T, with M = blur_matrix (the same result as two
    1-D convolutions, and 20x faster on CPU for MNIST's 28 px, where a 33-tap one-channel convolution is slow).
    x: (B, C, H, W), any float dtype/device; H, W > kernel_size // 2. Returns (B, C, H, W)."""
    H, W = x.shape[-2:]
    if kernel_size // 2 >= min(H, W):
        raise ValueError(f"a {kernel_size}-tap blur needs images larger than {kernel_size // 2} pixels, got {H}x{W}")
    k = gaussian_kernel1d(kernel_size, sigma, dtype=torch.float64)                 # built on the CPU, then moved
    M_H, M_W = (blur_matrix(n, k).to(x.device, x.dtype) for n in (H, W))           # (H, H), (W, W)
    return M_H @ x @ M_W.T                                                          # (B, C, H, W)


def highpass(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """x - lowpass(x): what the blur removes."""
    return x - gaussian_blur(x, kernel_size, sigma)


def hybrid(model_fn: CondEpsFn, cond_far: torch.Tensor, cond_near: torch.Tensor,
           uncond: Optional[torch.Tensor] = None, gamma: Optional[float] = None,
           kernel_size: int = 33, sigma: float = 2.0):
    """Hybrid images (§1.10; Geng et al. 2024, Factorized Diffusion; after Oliva et al. 2006):

        eps_hat = lowpass(eps_far) + highpass(eps_near),   eps_far = eps_theta(x_t, t, c_far), ...

    seen from afar the low frequencies (prompt `cond_far`) dominate, up close the high ones (`cond_near`).
    Both prompts (and their unconditional branches) run as one forward; with gamma each is the CFG estimate.
    v_hat (IF) is the mean of the two conditional v's. Default filter: 33 taps, sigma = 2 (the report's).
    """
    def eps_fn(x_t: torch.Tensor, t: int):
        (e1, v1), (e2, v2) = _branches(model_fn, [x_t, x_t], [cond_far, cond_near], t, uncond, gamma)
        eps_hat = gaussian_blur(e1, kernel_size, sigma) + highpass(e2, kernel_size, sigma)
        return eps_hat, (None if v1 is None else (v1 + v2) / 2)
    return eps_fn
