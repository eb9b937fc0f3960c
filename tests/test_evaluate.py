"""Sample metrics: the Fréchet distance against closed forms, the Wilson interval, the augmentation, the judges on
real digits, their cache, and the classifier's accuracy (slow)."""
import pytest
import torch

from minidiff.data import load_mnist
from minidiff.evaluate import (Judges, evaluate_samples, frechet_distance, load_or_train_classifier, shifted,
                               train_classifier, wilson_interval)


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


def test_wilson_interval():
    lo, hi = wilson_interval(200, 200)                   # all correct: the interval is not the empty [1, 1]
    assert hi == pytest.approx(1.0) and lo == pytest.approx(200 / (200 + 1.96 ** 2), rel=1e-9)
    lo, hi = wilson_interval(50, 100)                    # symmetric around 1/2, about +-1.96 sqrt(1/400)
    assert lo + hi == pytest.approx(1.0) and hi - 0.5 == pytest.approx(0.0962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_shifted_moves_whole_images_by_whole_pixels():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    y = shifted(x, 2, torch.Generator().manual_seed(0))
    where = y[:, 0].flatten(1).argmax(1)
    rows, cols = where // 9 - 4, where % 9 - 4
    assert (y.flatten(1).sum(1) == 1).all() and rows.abs().max() == 2 and cols.abs().max() == 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 15                     # many of the 25 shifts occur
    torch.testing.assert_close(shifted(x, 0, torch.Generator()), x)


@pytest.fixture(scope="module")
def small_judges():
    x, y = load_mnist(train=True)
    return Judges(*(train_classifier(x[:3000], y[:3000], kind, 2, progress=False) for kind in ("cnn", "mlp")))


def test_metrics_on_real_digits_with_small_judges(small_judges):
    x, y = load_mnist(train=True)
    held_out = 3000 + torch.randperm(57000, generator=torch.Generator().manual_seed(1))[:500]
    imgs, labels = x[held_out].unsqueeze(1).float() / 255, y[held_out]   # real digits the judges never saw
    m = evaluate_samples(small_judges, imgs, labels)
    wrong = evaluate_samples(small_judges, imgs, (labels + 1) % 10)
    assert m.class_accuracy > 0.8 and m.second_accuracy > 0.8 and wrong.class_accuracy < 0.1
    assert m.accuracy_interval[0] < m.class_accuracy < m.accuracy_interval[1]
    assert m.mean_confidence > wrong.mean_confidence
    assert m.frechet < 1.5 * m.frechet_real_floor + 1.0      # real training digits score at the real-data floor
    assert 0 < m.frechet_std < m.frechet and 0 < m.floor_std
    noise = evaluate_samples(small_judges.classifier, torch.rand(500, 1, 28, 28), labels)
    assert noise.frechet > 10 * m.frechet and noise.second_accuracy is None
    unconditional = evaluate_samples(small_judges, imgs)     # no digit asked for: confidence in the best guess
    assert unconditional.class_accuracy is None and unconditional.mean_confidence >= m.mean_confidence
    assert "class accuracy" not in str(unconditional) and "the MLP" in str(m)


def test_the_judge_cache_records_its_recipe_and_accuracy(tmp_path, monkeypatch):
    from minidiff import evaluate
    x, y = load_mnist(train=True)
    calls = []
    real = evaluate.train_classifier

    def quick(images, labels, kind="cnn", **kw):                 # a few hundred digits instead of the real training
        calls.append(kind)
        return real(images[:300], labels[:300], kind, 1, progress=False)
    monkeypatch.setattr(evaluate, "train_classifier", quick)
    first = load_or_train_classifier(tmp_path / "mnist_mlp.pt", kind="mlp")
    again = load_or_train_classifier(tmp_path / "mnist_mlp.pt", kind="mlp")
    assert calls == ["mlp"] and 0.3 < again.test_accuracy == first.test_accuracy < 1
    monkeypatch.setitem(evaluate.RECIPES, "mlp", {**evaluate.RECIPES["mlp"], "epochs": 9})   # another recipe: retrain
    load_or_train_classifier(tmp_path / "mnist_mlp.pt", kind="mlp")
    assert calls == ["mlp", "mlp"]
    raw = bytearray((tmp_path / "mnist_mlp.pt").read_bytes())   # a damaged cache is a one-line error
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "mnist_mlp.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="delete it to retrain the classifier"):
        load_or_train_classifier(tmp_path / "mnist_mlp.pt", kind="mlp")


def test_a_judge_being_trained_elsewhere_is_waited_for_not_trained_again(tmp_path, monkeypatch):
    """`make demo` runs two lanes: while one trains a judge (holding mnist_<kind>.pt.lock), the other waits for it and
    then loads what it wrote."""
    import threading
    from minidiff import evaluate
    from minidiff.data import atomic_save, hold, release
    x, y = load_mnist(train=True)
    trained = train_classifier(x[:300], y[:300], "mlp", 1, progress=False)
    calls = []
    monkeypatch.setattr(evaluate, "train_classifier", lambda *a, **kw: calls.append(a) or trained)
    path = tmp_path / "mnist_mlp.pt"
    lock = hold(tmp_path / "mnist_mlp.pt.lock")                  # "the other process" is training it
    got = []
    waiter = threading.Thread(target=lambda: got.append(load_or_train_classifier(path, kind="mlp")))
    waiter.start()
    waiter.join(timeout=1.5)
    assert waiter.is_alive() and not got                         # waiting for the lock
    atomic_save({"model": trained.state_dict(), "recipe": {**evaluate.RECIPES["mlp"], "kind": "mlp"},
                 "test_accuracy": 0.5}, path)                    # the other process is done
    release(lock)
    waiter.join(timeout=30)
    assert not waiter.is_alive() and calls == [] and got[0].test_accuracy == 0.5
    assert not (tmp_path / "mnist_mlp.pt.lock").exists()


def test_a_judge_trained_in_bf16_is_a_float32_model_that_reads_digits():
    """bf16 is how the judge trains (autocast, NHWC), not what it is: the result is an ordinary float32 model."""
    from minidiff.evaluate import accuracy
    x, y = load_mnist(train=True)
    held_out = x[3000:3500].unsqueeze(1).float() / 255
    plain, bf16 = (train_classifier(x[:3000], y[:3000], "cnn", 2, progress=False, bf16=b) for b in (False, True))
    assert all(p.dtype == torch.float32 for p in bf16.parameters()) and not bf16.training
    assert next(bf16.parameters()).is_contiguous()                      # handed back in the ordinary layout
    read_plain, read_bf16 = accuracy(plain, held_out, y[3000:3500]), accuracy(bf16, held_out, y[3000:3500])
    assert read_bf16 > 0.9 and abs(read_bf16 - read_plain) < 0.02            # measured: 94.8 % both


@pytest.mark.parametrize("damage", ["nan weight", "other weights"])
def test_a_judge_cache_with_intact_bytes_but_wrong_contents_is_refused(judges_cache, tmp_path, damage):
    """The CRC holds (the file was written whole), but the weights cannot judge: one line, not a traceback."""
    from minidiff.data import atomic_save, load_verified
    cached = load_verified(judges_cache / "mnist_cnn.pt", "")
    weights = dict(cached["model"])
    name = next(k for k, v in weights.items() if v.is_floating_point())
    if damage == "nan weight":
        weights[name] = weights[name].clone().fill_(float("nan"))
    else:
        del weights[name]
    atomic_save({**cached, "model": weights}, tmp_path / "mnist_cnn.pt")
    with pytest.raises(ValueError, match="delete it to retrain the classifier") as e:
        load_or_train_classifier(tmp_path / "mnist_cnn.pt", kind="cnn")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_the_judges_reach_their_accuracy():
    """The CNN >= 99 % on the MNIST test set (measured 99.28 %), the MLP >= 97.5 % (measured 98.06 %)."""
    from minidiff.evaluate import accuracy
    xt, yt = load_mnist(train=False)
    for kind, target in (("cnn", 0.99), ("mlp", 0.975)):
        clf = train_classifier(*load_mnist(train=True), kind, progress=False)
        assert accuracy(clf, xt.unsqueeze(1).float() / 255, yt) >= target


def test_the_far_judge_reads_digits_through_the_hybrids_low_pass(small_judges):
    """The far judge's recipe blurs every training digit with §1.10's filter, and so it reads low-passed digits, which
    the plain CNN (trained the same way on sharp digits) mostly cannot; seen() is that filter exactly."""
    from minidiff import evaluate
    from minidiff.guidance import gaussian_blur
    x, y = load_mnist(train=True)
    far = train_classifier(x[:3000], y[:3000], "far", 2, progress=False)
    test_x, test_y = load_mnist(train=False)
    sharp = test_x[:1000].unsqueeze(1).float() / 255
    blurred = gaussian_blur(sharp, 33, 2.0)
    assert torch.equal(evaluate.seen(sharp, "far"), blurred) and evaluate.seen(sharp, "cnn") is sharp
    far_reads, cnn_reads = evaluate.accuracy(far, blurred, test_y[:1000]), evaluate.accuracy(
        small_judges.classifier, blurred, test_y[:1000])
    assert far_reads > 0.9 and far_reads > cnn_reads + 0.2
