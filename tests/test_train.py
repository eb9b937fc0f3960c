"""Part B training: the loss goes down on real digits, resuming equals an uninterrupted run, damage is reported."""
import pytest
import torch

from minidiff import train as train_mod
from minidiff.data import load_mnist
from minidiff.train import TrainConfig, load_checkpoint, load_model, train


@pytest.fixture(scope="module")
def subset():
    images, labels = load_mnist(train=True)
    return images[:512], labels[:512]


def tiny(kind="class", **kw):
    return TrainConfig(**{**dict(kind=kind, num_hiddens=8, epochs=2, batch_size=64, snapshot_epochs=(1,)), **kw})


@pytest.mark.parametrize("kind", ["denoiser", "time", "class"])
def test_loss_goes_down_on_real_digits(tmp_path, subset, kind):
    state = train(tiny(kind, epochs=3, lr=3e-3), tmp_path, *subset, progress=False)
    losses = torch.tensor(state["losses"])
    steps = len(losses) // 3
    assert len(losses) == 3 * (512 // 64)
    assert losses[-steps:].mean() < 0.7 * losses[:steps].mean()
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "model_epoch1.pt", "model_epoch3.pt"}


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, subset, monkeypatch):
    cfg = tiny()
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
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_finished_run_is_not_retrained_and_other_config_is_refused(tmp_path, subset):
    train(tiny(epochs=1), tmp_path, *subset, progress=False)
    before = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    train(tiny(epochs=1), tmp_path, *subset, progress=False)
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="another configuration"):
        train(tiny(epochs=1, lr=0.5), tmp_path, *subset, progress=False)


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
