"""Combinators over noise estimators: CFG [A.4], views and anagrams (§1.8), blur and hybrids (§1.2, §1.10)."""
import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minidiff import guidance as G

B, C, H, W = 2, 3, 16, 16


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class ToyModel:
    """A conditional estimator whose output depends on x, t and cond, with variance channels; counts calls."""

    def __init__(self, with_v=True):
        self.calls, self.with_v = [], with_v
        self.w = rand(C, C, 3, 3, seed=42) / 9

    def __call__(self, x_t, t, cond):                       # cond: (N, 4)
        self.calls.append(x_t.shape[0])
        eps = torch.tanh(F.conv2d(x_t, self.w, padding=1)) + cond[:, :1, None, None] * x_t \
            + cond[:, 1:2, None, None] + 1e-3 * t
        v = torch.tanh(x_t * cond[:, 2:3, None, None] + cond[:, 3:4, None, None]) if self.with_v else None
        return eps, v


@pytest.fixture
def conds():
    return rand(1, 4, seed=1), rand(1, 4, seed=2), rand(1, 4, seed=3)      # c1, c2, uncond


def test_cfg_endpoints_and_one_batched_forward(conds):
    c, _, u = conds
    m, x = ToyModel(), rand(B, C, H, W, seed=4)
    eps_c, v_c = m(x, 7, c.expand(B, -1))
    eps_u, _ = m(x, 7, u.expand(B, -1))
    m.calls.clear()
    for gamma, want in ((0.0, eps_u), (1.0, eps_c), (7.0, eps_u + 7 * (eps_c - eps_u))):
        eps, v = G.cfg(m, c, u, gamma)(x, 7)
        torch.testing.assert_close(eps, want)
        torch.testing.assert_close(v, v_c)                         # variance from the conditional branch
    assert m.calls == [2 * B] * 3


def test_conditional_repeats_cond(conds):
    m, x = ToyModel(), rand(B, C, H, W, seed=4)
    eps, _ = G.conditional(m, conds[0])(x, 3)
    torch.testing.assert_close(eps, m(x, 3, conds[0].expand(B, -1))[0])


def test_limited_guides_inside_the_interval_only(conds):
    """Kynkaanniemi et al. 2024: the guided estimate at the steps inside, the plain one outside, one call a step."""
    c, _, u = conds
    m, x = ToyModel(), rand(B, C, H, W, seed=4)
    guided, plain = G.cfg(m, c, u, 5.0), G.conditional(m, c)
    eps_fn = G.limited(guided, plain, lambda t: t <= 600)
    for t in (999, 601, 600, 0):
        m.calls.clear()
        eps, v = eps_fn(x, t)
        want = (guided if t <= 600 else plain)(x, t)
        torch.testing.assert_close(eps, want[0])
        torch.testing.assert_close(v, want[1])
        assert m.calls == [2 * B if t <= 600 else B, 2 * B if t <= 600 else B]     # ours, then the reference


def test_autoguidance_extrapolates_from_the_bad_model_and_mixes_x0_alike(conds):
    """Karras et al. 2024: eps_bad + w (eps - eps_bad); w = 1 is the main model, w = 0 the bad one. The weights w and
    1 - w sum to 1, so the x0 estimate of the mix, (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar), is the same mix
    of the two models' x0 estimates (their D). v_hat is the main model's; one call of each model a step."""
    c, _, _ = conds
    main, bad, x = ToyModel(), ToyModel(), rand(B, C, H, W, seed=4)
    bad.w = rand(C, C, 3, 3, seed=7) / 9                                   # another (worse) model
    eps_m, v_m = main(x, 7, c.expand(B, -1))
    eps_b, _ = bad(x, 7, c.expand(B, -1))
    main.calls.clear(), bad.calls.clear()
    a = 0.3                                                                # some alpha_bar_t
    x0 = lambda eps: (x - math.sqrt(1 - a) * eps) / math.sqrt(a)            # [A.1] solved for x0
    for w, want in ((1.0, eps_m), (0.0, eps_b), (2.0, eps_b + 2 * (eps_m - eps_b))):
        eps, v = G.autoguidance(G.conditional(main, c), G.conditional(bad, c), w)(x, 7)
        torch.testing.assert_close(eps, want)
        torch.testing.assert_close(v, v_m)
        torch.testing.assert_close(x0(eps), x0(eps_b) + w * (x0(eps_m) - x0(eps_b)))
    assert main.calls == bad.calls == [B] * 3


VIEWS = [G.identity(), G.patch_permute(8, seed=3)] + [G.view(name, H) for name in G.VIEWS]   # every --view too


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_view_inverse_undoes_it_and_is_orthogonal(view):
    x = rand(B, C, H, W, seed=5)
    torch.testing.assert_close(view.invert(view.apply(x)), x, rtol=0, atol=0)
    torch.testing.assert_close(view.apply(view.invert(x)), x, rtol=0, atol=0)
    torch.testing.assert_close(view.invert_variance(view.apply(x).abs()).abs(), x.abs())   # v moves with pixels
    # orthogonal: a permutation and/or sign flip of the pixels, so N(0, I) noise stays N(0, I) [Geng et al. 2024]
    assert torch.equal(view.apply(x).abs().flatten().sort().values, x.abs().flatten().sort().values)


def test_views_are_the_named_transforms():
    x = torch.arange(16.).view(1, 1, 4, 4)
    assert torch.equal(G.flip_vertical().apply(x)[0, 0, 0], x[0, 0, 3])
    assert torch.equal(G.rotate(180).apply(x), x.flip(-1).flip(-2))
    assert torch.equal(G.rotate(90).apply(G.rotate(90).apply(x)), G.rotate(180).apply(x))
    assert torch.equal(G.negate().invert_variance(x), x)               # the variance never changes sign
    p = G.patch_permute(2).apply(x)
    assert not torch.equal(p, x) and set(p.flatten().tolist()) == set(x.flatten().tolist())
    for i in range(0, 4, 2):                                             # whole 2x2 patches move together
        for j in range(0, 4, 2):
            block = p[0, 0, i:i + 2, j:j + 2]
            assert block[0, 1] - block[0, 0] == 1 and block[1, 0] - block[0, 0] == 4
    with pytest.raises(ValueError, match="divisible"):
        G.patch_permute(5).apply(x)
    with pytest.raises(ValueError, match="90, 180 or 270"):
        G.rotate(45)
    assert [G.view(name, 28).name for name in G.VIEWS] == ["flip", "mirror", "rot90", "rot180", "rot270", "negate",
                                                          "patches7"]        # the jigsaw: 4 x 4 patches of 7 px
    with pytest.raises(ValueError, match="no view 'spin'"):
        G.view("spin", 28)


def test_anagram_of_identical_equivariant_estimators_is_the_estimator():
    """If eps(flip(x)) = flip(eps(x)) and both prompts are the same, (eps(x) + flip(eps(flip(x)))) / 2 = eps(x)."""
    k = rand(C, C, 3, 3, seed=6)
    k = (k + k.flip(-2)) / 2                                             # vertically symmetric kernel: equivariant
    model = lambda x, t, c: (torch.tanh(F.conv2d(x, k, padding=1)) * c[:, :1, None, None], x.sigmoid())  # noqa
    c, x = rand(1, 4, seed=7), rand(B, C, H, W, seed=8)
    eps, v = G.anagram(model, [c, c], [G.identity(), G.flip_vertical()])(x, 5)
    want_eps, want_v = G.conditional(model, c)(x, 5)
    torch.testing.assert_close(eps, want_eps)
    torch.testing.assert_close(v, want_v)


@pytest.mark.parametrize("gamma", [None, 7.0])
def test_anagram_is_the_mean_of_inverted_views_in_one_forward(conds, gamma):
    c1, c2, u = conds
    views = [G.identity(), G.flip_vertical(), G.rotate(90), G.negate()]
    cs = [c1, c2, c1, c2]
    m, x = ToyModel(), rand(B, C, H, W, seed=9)
    eps, v = G.anagram(m, cs, views, u if gamma else None, gamma)(x, 11)
    assert m.calls == [len(views) * B * (2 if gamma else 1)]
    per_view = [(G.cfg(m, c, u, gamma) if gamma else G.conditional(m, c))(view.apply(x), 11)
                for view, c in zip(views, cs)]
    torch.testing.assert_close(eps, sum(view.invert(e) for view, (e, _) in zip(views, per_view)) / len(views))
    torch.testing.assert_close(v, sum(view.invert_variance(vv) for view, (_, vv) in zip(views, per_view)) / 4)


def test_anagram_without_variance_and_bad_arguments(conds):
    m = ToyModel(with_v=False)
    eps, v = G.anagram(m, [conds[0]], [G.flip_vertical()])(rand(B, C, H, W), 1)
    assert v is None and eps.shape == (B, C, H, W)
    with pytest.raises(ValueError, match="one conditioning per view"):
        G.anagram(m, [conds[0]], [G.identity(), G.flip_vertical()])
    with pytest.raises(ValueError, match="unconditional embedding and gamma"):
        G.anagram(m, [conds[0]], [G.identity()], gamma=3.0)(rand(B, C, H, W), 1)


def test_gaussian_blur_matches_torchvision():
    from torchvision.transforms.functional import gaussian_blur
    x = rand(B, C, 28, 28, seed=10).float()
    for k, s in ((5, 1.0), (5, 2.0), (33, 2.0), (1, 0.5)):
        torch.testing.assert_close(G.gaussian_blur(x, k, s), gaussian_blur(x, [k, k], [s, s]), rtol=1e-5, atol=1e-6)


def test_blur_matrix_is_the_reflect_padded_convolution():
    k = G.gaussian_kernel1d(7, 1.5, dtype=torch.float64)
    v = torch.arange(10, dtype=torch.float64) ** 2                                  # any signal, (10,)
    padded = torch.cat([v[1:4].flip(0), v, v[-4:-1].flip(0)])                      # reflect: no edge repeated
    direct = torch.stack([(k * padded[i:i + 7]).sum() for i in range(10)])          # sum_u k_u v_(i+u)
    M = G.blur_matrix(10, k)
    torch.testing.assert_close(M @ v, direct)
    torch.testing.assert_close(M.sum(1), torch.ones(10, dtype=torch.float64))       # every row keeps DC
    x = rand(B, C, 12, 10, seed=11).double()                                        # H != W: each side its own M
    torch.testing.assert_close(G.gaussian_blur(x, 7, 1.5), G.blur_matrix(12, k) @ x @ M.T)


def test_gaussian_blur_properties():
    k = G.gaussian_kernel1d(33, 2.0, dtype=torch.float64)
    assert k.sum().item() == pytest.approx(1.0) and torch.equal(k, k.flip(0)) and k.argmax() == 16
    const = torch.full((1, 1, 20, 20), 0.3, dtype=torch.float64)
    torch.testing.assert_close(G.gaussian_blur(const, 33, 2.0), const)            # low-pass keeps DC
    torch.testing.assert_close(G.highpass(const, 33, 2.0), torch.zeros_like(const))
    assert G.gaussian_blur(const.half(), 5, 1.0).dtype == torch.float16
    with pytest.raises(ValueError, match="odd"):
        G.gaussian_kernel1d(4, 1.0)
    with pytest.raises(ValueError, match="larger"):
        G.gaussian_blur(torch.zeros(1, 1, 8, 8), 33, 2.0)


@pytest.mark.parametrize("gamma", [None, 7.0])
def test_hybrid(conds, gamma):
    c1, c2, u = conds
    ug = u if gamma else None
    m, x = ToyModel(), rand(B, C, 32, 32, seed=12)
    # hybrid(eps, eps) = eps: low-pass + high-pass is the identity
    same, v_same = G.hybrid(m, c1, c1, ug, gamma)(x, 4)
    want, v_want = (G.cfg(m, c1, u, gamma) if gamma else G.conditional(m, c1))(x, 4)
    torch.testing.assert_close(same, want)
    torch.testing.assert_close(v_same, v_want)
    # two prompts: lowpass(eps_1) + highpass(eps_2), in one forward
    m.calls.clear()
    eps, _ = G.hybrid(m, c1, c2, ug, gamma)(x, 4)
    assert m.calls == [2 * B * (2 if gamma else 1)]
    e1 = (G.cfg(m, c1, u, gamma) if gamma else G.conditional(m, c1))(x, 4)[0]
    e2 = (G.cfg(m, c2, u, gamma) if gamma else G.conditional(m, c2))(x, 4)[0]
    torch.testing.assert_close(eps, G.gaussian_blur(e1, 33, 2.0) + e2 - G.gaussian_blur(e2, 33, 2.0))


def test_samplers_never_import_a_model():
    """DESIGN §1: sampling, guidance and editing depend on schedule (and each other) only, never on a model class."""
    allowed = {"__future__", "math", "dataclasses", "typing", "torch", "torch.nn.functional",
               "schedule", "sampling", "tqdm.auto"}                     # tqdm: the sampling loop's progress bar
    root = Path(G.__file__).parent
    for name in ("sampling.py", "guidance.py", "editing.py"):
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "") in allowed, f"{name} imports from {node.module}"
            elif isinstance(node, ast.Import):
                assert all(a.name in allowed for a in node.names), f"{name} imports {[a.name for a in node.names]}"


def test_cfg_in_both_conventions():
    """The report writes eps_u + gamma (eps_c - eps_u); the fall 2026 draft writes v_c + w (v_c - v_u). They are one
    operation with gamma = w + 1: w = 0 (gamma = 1) is the conditional estimate, w = -1 (gamma = 0) the
    unconditional one, and the draft's w = 7 is gamma = 8."""
    m, x = ToyModel(), rand(B, C, H, W, seed=20)
    c, u = rand(1, 4, seed=21), rand(1, 4, seed=22)
    e_c, _ = m(x, 3, c.expand(B, -1))
    e_u, _ = m(x, 3, u.expand(B, -1))
    for w in (-1.0, 0.0, 7.0):
        torch.testing.assert_close(G.cfg(m, c, u, w + 1)(x, 3)[0], e_c + w * (e_c - e_u))
    torch.testing.assert_close(G.cfg(m, c, u, 1.0)(x, 3)[0], e_c)
    torch.testing.assert_close(G.cfg(m, c, u, 0.0)(x, 3)[0], e_u)


def test_the_combinators_are_linear_in_the_estimate():
    """cfg, anagram and hybrid of a * f + b * g are a * (that of f) + b * (that of g): so they serve noise estimates
    and velocities alike (a flow's velocity is an affine function of its noise estimate at fixed x_t, t)."""
    f, g = ToyModel(), ToyModel()
    g.w = rand(C, C, 3, 3, seed=23) / 9
    a, b = 0.7, -1.3

    def mix(x_t, t, c):
        return tuple(None if p is None else a * p + b * q for p, q in zip(f(x_t, t, c), g(x_t, t, c)))

    c1, c2, u = rand(1, 4, seed=24), rand(1, 4, seed=25), rand(1, 4, seed=26)
    x = rand(B, C, 32, 32, seed=27)
    for combine in (lambda m: G.cfg(m, c1, u, 5.0),
                    lambda m: G.anagram(m, [c1, c2], [G.identity(), G.rotate(180)], u, 7.0),
                    lambda m: G.hybrid(m, c1, c2, u, 7.0)):
        want = a * combine(f)(x, 5)[0] + b * combine(g)(x, 5)[0]
        torch.testing.assert_close(combine(mix)(x, 5)[0], want)
