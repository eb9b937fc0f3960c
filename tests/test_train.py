"""Part B training: the loss goes down on real digits, resuming equals an uninterrupted run, damage is reported."""
import math

import pytest
import torch

from minidiff import train as train_mod
from minidiff.data import load_mnist
from minidiff.train import TrainConfig, load_checkpoint, load_model, train, training_run


@pytest.fixture(scope="module")
def subset():
    images, labels = load_mnist(train=True)
    return images[:512], labels[:512]


def tiny(kind="class", **kw):
    return TrainConfig(**{**dict(kind=kind, num_hiddens=8, epochs=2, batch_size=64, snapshot_epochs=(1,)), **kw})


@pytest.mark.parametrize("kind, objective", [("denoiser", "ddpm"), ("time", "ddpm"), ("class", "ddpm"),
                                             ("time", "flow"), ("class", "flow")])
def test_loss_goes_down_on_real_digits(tmp_path, subset, kind, objective):
    state = train(tiny(kind, epochs=3, lr=3e-3, objective=objective), tmp_path, *subset, progress=False)
    losses = torch.tensor(state["losses"])
    steps = len(losses) // 3
    assert len(losses) == 3 * (512 // 64)
    assert losses[-steps:].mean() < 0.7 * losses[:steps].mean()
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "model_epoch1.pt", "model_epoch3.pt"}


@pytest.mark.parametrize("cfg", [tiny(), tiny(objective="flow", ema=0.99, lr_schedule="one-cycle")],
                         ids=["ddpm", "flow with EMA, one-cycle"])
def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, subset, monkeypatch, cfg):
    straight = train(cfg, tmp_path / "a", *subset, progress=False)

    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def step_then_interrupt(self, *a, **k):      # Ctrl-C in the middle of epoch 2
        calls["n"] += 1
        if calls["n"] == 8 + 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", *subset, progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1     # at most one epoch lost
    resumed = train(cfg, tmp_path / "b", *subset, progress=False)

    assert resumed["losses"] == straight["losses"]
    for weights in ("model", "ema") if cfg.ema else ("model",):                  # the moving average resumes too
        for k, v in straight[weights].items():
            assert torch.equal(v, resumed[weights][k]), (weights, k)


def test_finished_run_is_not_retrained_and_other_config_or_data_is_refused(tmp_path, subset):
    train(tiny(epochs=1), tmp_path, *subset, progress=False)
    before = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    train(tiny(epochs=1), tmp_path, *subset, progress=False)
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="another configuration"):
        train(tiny(epochs=1, lr=0.5), tmp_path, *subset, progress=False)
    x, y = subset
    with pytest.raises(ValueError, match=f"trained on {len(x)} images, not {len(x) // 2}"):   # e.g. another --images
        train(tiny(epochs=1), tmp_path, x[:len(x) // 2], y[:len(x) // 2], progress=False)


def test_truncated_checkpoint_gives_one_line_error_naming_the_file(tmp_path, subset):
    train(tiny(epochs=1), tmp_path, *subset, progress=False)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError) as e:
        load_model(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="corrupted or truncated"):
        train(tiny(epochs=1), tmp_path, *subset, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, subset, monkeypatch):
    real = train_mod.batch_loss
    calls = {"n": 0}

    def nan_in_epoch_2(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] > 8 else loss

    monkeypatch.setattr(train_mod, "batch_loss", nan_in_epoch_2)
    with pytest.raises(FloatingPointError, match="epoch 2"):
        train(tiny(), tmp_path, *subset, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _outputs(path, subset) -> torch.Tensor:
    """The trained model's noise estimates on a fixed batch: what training produced, as a function. Two runs that
    differ only in float rounding differ here by up to about 0.5 %, not 1e-6: a conv bias followed by BatchNorm
    gets a zero gradient up to rounding, which Adam turns into steps of its full size, and BatchNorm's running
    mean (used in eval mode) follows such a bias with a lag. Weights are not compared one by one for that reason."""
    g = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(64, 1, 28, 28, generator=g), torch.rand(64, generator=g)
    with torch.no_grad():
        return load_model(path)(x_t, t, torch.eye(10)[subset[1][:64]])


def test_channels_last_trains_the_same_model(tmp_path, subset):
    """channels_last changes the memory layout only: the same losses and model up to float rounding, far closer
    than another seed's model."""
    plain = train(tiny(), tmp_path / "a", *subset, progress=False)
    nhwc = train(tiny(), tmp_path / "b", *subset, progress=False, channels_last=True)
    train(tiny(seed=1), tmp_path / "c", *subset, progress=False)
    assert torch.allclose(torch.tensor(nhwc["losses"]), torch.tensor(plain["losses"]), rtol=1e-4)
    a, b, c = (_outputs(tmp_path / d / "checkpoint.pt", subset) for d in "abc")
    assert _relative_error(b, a) < 0.01 and _relative_error(c, a) > 10 * _relative_error(b, a)


def test_bf16_autocast_accuracy_cost(tmp_path, subset):
    """The cost of --bf16 (8-bit mantissa in the convolutions and linears, fp32 weights and optimizer): one forward
    of a trained model is within 2 % (relative L2) of fp32, and training follows the fp32 loss curve within 2 %
    (measured: 0.5 % and 0.006 %)."""
    fp32 = train(tiny(epochs=3, lr=3e-3), tmp_path / "a", *subset, progress=False)
    bf16 = train(tiny(epochs=3, lr=3e-3, bf16=True), tmp_path / "b", *subset, progress=False)
    last = slice(-8, None)                                                 # the last epoch
    loss32, loss16 = torch.tensor(fp32["losses"][last]).mean(), torch.tensor(bf16["losses"][last]).mean()
    assert abs(loss16 - loss32) < 0.02 * loss32

    exact = _outputs(tmp_path / "a" / "checkpoint.pt", subset)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = _outputs(tmp_path / "a" / "checkpoint.pt", subset)
    assert approx.dtype == torch.bfloat16
    error = _relative_error(approx.float(), exact)
    assert 1e-4 < error < 0.02            # really computed in bf16 (not zero), and the cost is small


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, subset):
    """torch.compile fuses kernels (a minute of compiling on a CPU): the same training up to float rounding."""
    eager = train(tiny(epochs=1), tmp_path / "a", *subset, progress=False)
    compiled = train(tiny(epochs=1), tmp_path / "b", *subset, progress=False, compile=True)
    assert torch.allclose(torch.tensor(compiled["losses"]), torch.tensor(eager["losses"]), rtol=1e-3)
    a, b = _outputs(tmp_path / "a" / "checkpoint.pt", subset), _outputs(tmp_path / "b" / "checkpoint.pt", subset)
    assert _relative_error(b, a) < 0.01


def test_training_run_lists_the_snapshots_then_the_latest_epoch(tmp_path, subset):
    train(tiny(epochs=3, snapshot_epochs=(1, 2)), tmp_path, *subset, progress=False)
    run = training_run(tmp_path / "checkpoint.pt")
    assert run.finished and (run.epoch, run.config.epochs) == (3, 3) and run.missing == []
    assert run.weights == [(e, tmp_path / f"model_epoch{e}.pt") for e in (1, 2, 3)]
    (tmp_path / "model_epoch3.pt").unlink()                  # stopped before the last snapshot was written
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["config"]["epochs"] = 4                            # ... of a longer run
    torch.save(state, tmp_path / "checkpoint.pt")
    run = training_run(tmp_path / "checkpoint.pt")
    assert not run.finished and run.weights[-1] == (3, tmp_path / "checkpoint.pt")   # its weights are in there


def test_pure_noise_denoiser_learns_the_mean_digit(tmp_path, subset):
    """2025 course §1.2.3: trained on z = eps alone, D(z) tends to E[x], the mean training digit (the minimiser of
    || D(eps) - x ||^2 over independent eps and x), whatever the noise."""
    train(tiny("denoiser", pure_noise=True, epochs=4, lr=1e-2, batch_size=32), tmp_path, *subset, progress=False)
    mean_digit = subset[0].float().div(255).mean(0).view(1, 1, 28, 28)
    with torch.no_grad():
        z = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        out = load_model(tmp_path / "checkpoint.pt")(z)
    to_mean = float(((out - mean_digit) ** 2).mean().sqrt())
    digit_to_mean = float(((subset[0][:8].float().div(255).unsqueeze(1) - mean_digit) ** 2).mean().sqrt())
    assert to_mean < 0.3 * digit_to_mean                    # much nearer the mean than any real digit is


def test_ema_is_the_warmed_up_moving_average_and_load_model_returns_it(tmp_path, subset):
    from minidiff.mnist_unet import MNISTUNet
    from minidiff.train import update_ema
    torch.manual_seed(0)
    model = MNISTUNet(tiny().model_config())
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    w = model.state_dict()["down0.0.0.weight"]
    update_ema(ema, model, decay=0.999, step=1)                 # d = min(0.999, 2 / 11): ema = d 0 + (1 - d) w
    torch.testing.assert_close(ema["down0.0.0.weight"], (1 - 2 / 11) * w)
    assert torch.equal(ema["down0.0.1.num_batches_tracked"], model.state_dict()["down0.0.1.num_batches_tracked"])
    update_ema(ema, model, decay=0.9, step=10 ** 6)             # long after the warm-up: d = decay
    torch.testing.assert_close(ema["down0.0.0.weight"], 0.9 * (9 / 11) * w + 0.1 * w)

    state = train(tiny(epochs=1, ema=0.99), tmp_path, *subset, progress=False)
    for path in (tmp_path / "checkpoint.pt", tmp_path / "model_epoch1.pt"):    # both files keep both weights
        averaged, raw = load_model(path).state_dict(), load_model(path, ema=False).state_dict()
        assert all(torch.equal(averaged[k], state["ema"][k]) for k in averaged)
        assert all(torch.equal(raw[k], state["model"][k]) for k in raw)
        assert not torch.equal(averaged["out.1.weight"], raw["out.1.weight"])


def test_a_checkpoint_from_before_the_new_options_still_loads_and_resumes(tmp_path, subset):
    """Checkpoints written before objective / pure_noise / ema existed lack them: they take the defaults. Before
    lr_schedule they said lr_decay (True: the exponential decay) and kept an ExponentialLR's state."""
    train(tiny(epochs=1), tmp_path, *subset, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    for key in ("objective", "pure_noise", "ema", "lr_schedule"):
        del state["config"][key]
    state["config"]["lr_decay"] = True
    state["scheduler"] = {"gamma": 0.1 ** 0.5, "base_lrs": [1e-3], "last_epoch": 1}
    torch.save(state, tmp_path / "checkpoint.pt")
    assert load_model(tmp_path / "checkpoint.pt").config.kind == "class"
    assert train(tiny(epochs=1), tmp_path, *subset, progress=False)["epoch"] == 1        # the same run: accepted


def test_learning_rate_schedules():
    steps = 10                                              # per epoch; 3 epochs
    lrs = {name: [train_mod.learning_rate(tiny(epochs=3, lr=1e-2, lr_schedule=name), k, steps) for k in range(30)]
           for name in train_mod.LR_SCHEDULES}
    assert lrs["constant"] == [1e-2] * 30
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)       # the report's ExponentialLR, stepped
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1 / 3))  # after each epoch: the oracle
    for epoch in range(3):
        assert lrs["exponential"][epoch * steps:(epoch + 1) * steps] == pytest.approx([decay.get_last_lr()[0]] * steps)
        opt.step()
        decay.step()
    one = lrs["one-cycle"]                                  # warm-up 3 steps (10 % of 30), then a cosine to 0
    assert one[:3] == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2])
    assert one[3 + 27 // 2] == pytest.approx(0.5e-2 * (1 + math.cos(math.pi * 14 / 27)))
    assert all(a > b for a, b in zip(one[2:], one[3:])) and one[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny(lr_schedule="cosine")
