"""Flow matching (minidiff/flow.py, schedule.FlowPath, sampling.euler_step / heun): the path and its velocity, the loss,
Euler and Heun through the one loop, CFG on the velocity, and the course's multiplicative time-only UNet."""
import math

import pytest
import torch

from minidiff import flow
from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig
from minidiff.sampling import euler_step, flow_times, heun, iterative_denoise, one_step_denoise
from minidiff.schedule import FlowPath

PATH = FlowPath()


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_the_path_runs_from_noise_to_data_with_velocity_x1_minus_eps():
    x1, eps = rand(2, 1, 6, 6), rand(2, 1, 6, 6, seed=1)
    torch.testing.assert_close(PATH.add_noise(x1, 0.0, eps), eps)                 # t = 0: the noise (the course's x0)
    torch.testing.assert_close(PATH.add_noise(x1, 1.0, eps), x1)                  # t = 1: the digit
    t, h = 0.3, 1e-6                                                             # d x_t / dt, by a central difference
    velocity = (PATH.add_noise(x1, t + h, eps) - PATH.add_noise(x1, t - h, eps)) / (2 * h)
    torch.testing.assert_close(velocity, x1 - eps)
    times = torch.tensor([0.0, 0.25])                                            # per-image times, as in training
    torch.testing.assert_close(PATH.add_noise(x1, times, eps)[1], 0.75 * eps[1] + 0.25 * x1[1])


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.93])
def test_predict_with_the_true_velocity_inverts_the_path(t):
    x1, eps = rand(2, 1, 6, 6), rand(2, 1, 6, 6, seed=1)
    x1_hat, eps_hat = PATH.predict(PATH.add_noise(x1, t, eps), t, x1 - eps)
    torch.testing.assert_close(x1_hat, x1)
    torch.testing.assert_close(eps_hat, eps)
    torch.testing.assert_close(one_step_denoise(lambda x_t, t: (x1 - eps, None), PATH, PATH.add_noise(x1, t, eps), t),
                               x1)


def test_the_loss_of_the_exact_velocity_field_of_a_two_point_dataset_is_zero():
    """Two digits, each with its own noise: a model that finds which straight line x_t lies on and returns that line's
    velocity x1 - eps is exact, and the loss is 0; the velocity of the other line is not."""
    x1, eps = rand(2, 1, 6, 6).sigmoid(), rand(2, 1, 6, 6, seed=1)

    def exact(x_t, t):                                                           # (B, 1, 6, 6), (B,)
        lines = [PATH.add_noise(x1[j:j + 1], t, eps[j:j + 1]) for j in range(2)]
        j = torch.stack([((x_t - line) ** 2).flatten(1).sum(1) for line in lines]).argmin(0)   # (B,)
        return (x1 - eps)[j]

    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    assert flow.loss(exact, x1, t, eps) < 1e-20
    assert flow.loss(lambda x_t, t: (x1 - eps).flip(0), x1, t, eps) > 0.1


@pytest.mark.parametrize("second_order", [False, True])
def test_euler_and_heun_on_a_constant_field_land_on_x0_plus_u_and_draw_no_noise(second_order):
    x0, u = rand(2, 1, 6, 6), rand(2, 1, 6, 6, seed=2)
    field = lambda x_t, t: (u, None)                                             # noqa: E731
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    for n in (1, 7, 50):
        out = iterative_denoise(field, PATH, x0, flow_times(1 / n), step=heun(field) if second_order else euler_step,
                                generator=g)
        torch.testing.assert_close(out, x0 + u, rtol=1e-12, atol=1e-12)
    assert torch.equal(g.get_state(), before)


def test_euler_on_the_straight_line_field_maps_x0_to_x1_in_any_number_of_steps():
    """u(x, t) = (x1 - x) / (1 - t) points from x to the digit x1; on the straight path it is x1 - x0, so Euler stays
    on the line and lands on x1 exactly (its last evaluation is at t = (N - 1) / N < 1)."""
    x0, x1 = rand(2, 1, 6, 6), rand(2, 1, 6, 6, seed=3)
    field = lambda x_t, t: ((x1 - x_t) / (1 - t), None)                         # noqa: E731
    for n in (1, 4, 25):
        out = iterative_denoise(field, PATH, x0, flow_times(1 / n), step=euler_step)
        torch.testing.assert_close(out, x1, rtol=1e-10, atol=1e-10)


def test_heun_is_second_order_and_euler_first():
    """dx/dt = -x (1 + t) from x(0) = x0 has x(1) = x0 exp(-1.5). Halving the step halves Euler's error and quarters
    Heun's."""
    x0 = rand(1, 1, 2, 2)
    field = lambda x_t, t: (-x_t * (1 + t), None)                                # noqa: E731
    exact = x0 * math.exp(-1.5)

    def error(step, n):
        return float((iterative_denoise(field, PATH, x0, flow_times(1 / n), step=step) - exact).abs().max())

    euler = [error(euler_step, n) for n in (20, 40)]
    second = [error(heun(field), n) for n in (20, 40)]
    assert 1.8 < euler[0] / euler[1] < 2.2 and 3.6 < second[0] / second[1] < 4.4 and second[1] < euler[1] / 20


def test_flow_times():
    assert flow_times(1 / 4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    ts = flow_times(1 / 300)
    assert len(ts) == 301 and ts[0] == 0.0 and ts[-1] == 1.0
    half = flow_times(0.02, start=0.5)                                           # the fall 2026 Part A's §1.5
    assert len(half) == 26 and half[0] == 0.5 and half[-1] == 1.0 and abs(half[-2] - 0.98) < 1e-12
    short = flow_times(0.3, start=0.5)                                           # the last step shortened to land on 1
    assert short == [0.5, 0.8, 1.0]
    with pytest.raises(ValueError, match="backwards"):                           # a flow runs from t = 0 up to 1
        iterative_denoise(lambda x_t, t: (x_t, None), PATH, rand(1, 1, 2, 2), [1.0, 0.5, 0.0], step=euler_step)


@pytest.fixture(scope="module")
def class_flow():
    torch.manual_seed(0)
    return MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="class")).eval()


def test_velocity_cfg_endpoints(class_flow):
    """u = u_u + gamma (u_c - u_u): gamma = 1 is the conditional velocity, gamma = 0 the unconditional one (the 2025
    course's convention; the fall 2026 draft's v_c + w (v_c - v_u) is gamma = w + 1)."""
    x, digits = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 4, 7])
    u_fn = flow.estimator(class_flow)
    with torch.no_grad():
        u_c, _ = u_fn(x, 0.4, flow.one_hot(digits))
        u_u, _ = u_fn(x, 0.4, torch.zeros(3, 10))
        for gamma, want in ((1.0, u_c), (0.0, u_u), (5.0, u_u + 5 * (u_c - u_u))):
            torch.testing.assert_close(flow.guided_estimator(class_flow, digits, gamma)(x, 0.4)[0], want)
        torch.testing.assert_close(flow.guided_estimator(class_flow)(x, 0.4)[0], u_u)


def test_sample_is_euler_through_the_loop_and_deterministic(class_flow):
    """flow.sample against a hand-written Euler loop, x <- x + (1 / N) u(x, t), with CFG."""
    x0, digits = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2)), torch.tensor([3, 8])
    ours = flow.sample(class_flow, x0, digits, num_steps=10)
    x, c = x0.clone(), flow.one_hot(digits)
    with torch.no_grad():
        for k in range(10):
            t = torch.full((2,), k / 10)
            u_c, u_u = class_flow(x, t, c), class_flow(x, t, torch.zeros_like(c))
            x = x + (1 / 10) * (u_u + 5.0 * (u_c - u_u))
    torch.testing.assert_close(ours, x.clamp(0, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, flow.sample(class_flow, x0, digits, num_steps=10), rtol=0, atol=0)
    torch.testing.assert_close(ours, flow.sample(class_flow, x0, digits, num_steps=10, guide_below=1.0), rtol=0,
                               atol=0)
    assert flow.sample(class_flow, x0, digits, num_steps=5, second_order=True).shape == (2, 1, 28, 28)


def test_autoguided_sample_is_euler_on_the_extrapolated_velocity():
    """flow.sample(..., autoguide=(bad, w)) against a hand-written Euler loop on u_bad + w (u - u_bad) (Karras et al.
    2024), for a time-only model guided by another one; a bad model equal to the main one changes nothing."""
    torch.manual_seed(4)
    main = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="time", time_injection="multiply")).eval()
    bad = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="time", time_injection="multiply")).eval()
    x0 = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    ours = flow.sample(main, x0, num_steps=4, autoguide=(bad, 3.0))
    x = x0.clone()
    with torch.no_grad():
        for k in range(4):
            t = torch.full((2,), k / 4)
            u, u_bad = main(x, t), bad(x, t)
            x = x + (1 / 4) * (u_bad + 3.0 * (u - u_bad))
    torch.testing.assert_close(ours, x.clamp(0, 1), rtol=1e-5, atol=1e-5)
    assert (ours - flow.sample(main, x0, num_steps=4)).abs().max() > 1e-3           # the guidance matters here
    torch.testing.assert_close(flow.sample(main, x0, num_steps=4, autoguide=(main, 3.0)),
                               flow.sample(main, x0, num_steps=4), rtol=0, atol=0)


def test_guide_below_skips_cfg_while_the_noise_fraction_1_minus_t_is_above_it():
    """guide_below = 0.6 with 10 Euler steps: t = 0, 0.1, 0.2, 0.3 (noise fraction 1 - t > 0.6) take the
    conditional velocity, t = 0.4 ... 0.9 the guided one."""
    torch.manual_seed(3)
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="class")).eval()
    with torch.no_grad():                     # a class embedding that matters (at initialisation it barely does)
        for p in [*model.c_emb1.parameters(), *model.c_emb2.parameters()]:
            p.normal_(0, 2)
    x0, digits = torch.randn(2, 1, 28, 28), torch.tensor([2, 5])
    c = flow.one_hot(digits)

    @torch.no_grad()
    def euler(first_guided: int) -> torch.Tensor:
        x = x0.clone()
        for k in range(10):
            t = torch.full((2,), k / 10)
            u_c, u_u = model(x, t, c), model(x, t, torch.zeros_like(c))
            x = x + (1 / 10) * (u_u + 5.0 * (u_c - u_u) if k >= first_guided else u_c)
        return x
    limited, everywhere = euler(4), euler(0)
    assert (limited - everywhere).abs().max() > 1e-4     # the 4 unguided steps matter, 10x the tolerance below
    ours = flow.sample(model, x0, digits, num_steps=10, guide_below=0.6)
    torch.testing.assert_close(ours, limited.clamp(0, 1), rtol=1e-5, atol=1e-5)


def test_the_flow_time_only_unet_multiplies_its_time_embeddings():
    """u0 * t1, u1 * t2 (the 2025 course) vs u0 + t1, u1 + t2 (DDPM): with t1 = t2 = 1 the multiplicative model is
    the additive one with t1 = t2 = 0, and the parameters are the same."""
    torch.manual_seed(0)
    mult = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="time", time_injection="multiply")).eval()
    add = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="time")).eval()
    add.load_state_dict(mult.state_dict())
    with torch.no_grad():
        for model, value in ((mult, 1.0), (add, 0.0)):
            for fc in (model.t_emb1, model.t_emb2):
                fc[2].weight.zero_()
                fc[2].bias.fill_(value)
        x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
        torch.testing.assert_close(mult(x, t), add(x, t))
    with pytest.raises(ValueError, match="time_injection"):
        MNISTUNetConfig(kind="class", time_injection="multiply")


def test_euler_from_half_with_h_002_takes_25_updates_and_ends_on_1():
    """The fall 2026 draft's §1.5: 25 Euler updates from t = 0.5, the last landing exactly on t = 1."""
    ts = flow_times(0.02, start=0.0)
    steps = []
    x = iterative_denoise(lambda x_t, t: (torch.zeros_like(x_t), None), PATH, rand(1, 1, 2, 2), ts,
                          i_start=ts.index(0.5), callback=lambda i, t_next, x, x1_hat: steps.append(t_next))
    assert len(steps) == 25 and steps[-1] == 1.0 and abs(steps[0] - 0.52) < 1e-12
