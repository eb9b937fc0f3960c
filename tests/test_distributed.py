"""Data-parallel training (torchrun, gloo on CPU) equals single-process training on the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minidiff import distributed
from minidiff.data import load_mnist
from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig
from minidiff.train import TrainConfig, batch_loss, load_checkpoint, train

REPO = Path(__file__).resolve().parent.parent
CFG = dict(num_hiddens=8, epochs=2, batch_size=64, snapshot_epochs=(1,))


def test_one_process_helpers_are_no_ops():
    model = torch.nn.BatchNorm2d(3)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard(64) == slice(0, 64) and distributed.wrap(model, torch.device("cpu")) is model
    x = torch.randn(3)
    assert distributed.mean(x) is x
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")      # WORLD_SIZE unset: nothing joined


@pytest.mark.parametrize("kind", ["denoiser", "time", "class"])
def test_slices_of_a_global_batch_get_the_single_process_draws(kind):
    """With a model that outputs 0, the loss is mean(eps^2) (mean((x0 + sigma eps)^2 ... ) for the denoiser):
    the mean of the two halves' losses, each drawn for the whole batch and sliced, is the whole batch's loss,
    and the generator ends in the same state."""
    cfg = TrainConfig(kind=kind)
    x0, y = torch.rand(8, 1, 4, 4), torch.arange(8)

    def zero_model(x_t, *cond):
        return torch.zeros_like(x_t)

    def run(part, n):
        g = torch.Generator().manual_seed(0)
        return batch_loss(zero_model, cfg, x0[part], y[part], g, part, n), g.get_state()

    whole, state = run(slice(None), None)
    (a, state_a), (b, state_b) = run(slice(0, 4), 8), run(slice(4, 8), 8)
    torch.testing.assert_close((a + b) / 2, whole)
    assert torch.equal(state_a, state) and torch.equal(state_b, state)


WORKER = """
import sys
import torch
from minidiff import distributed
from minidiff.data import load_mnist
from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig
from minidiff.train import TrainConfig, load_checkpoint, train

torch.set_num_threads(1)
out, rank_state = sys.argv[1], sys.argv[2]
cfg = TrainConfig.class_conditioned(**{cfg})
x, y = load_mnist()
real_step, calls = torch.optim.Adam.step, [0]

def step_then_interrupt(self, *a, **k):          # every rank stops at step 3 of epoch 2
    calls[0] += 1
    if calls[0] == 8 + 3:
        raise KeyboardInterrupt
    return real_step(self, *a, **k)

torch.optim.Adam.step = step_then_interrupt
try:
    train(cfg, out, x[:512], y[:512], progress=False)
    raise SystemExit("not interrupted")
except KeyboardInterrupt:
    pass
torch.optim.Adam.step = real_step
distributed.barrier()
assert load_checkpoint(out + "/checkpoint.pt")["epoch"] == 1
state = train(cfg, out, x[:512], y[:512], progress=False)       # resume: every rank loads the checkpoint
if distributed.rank() == 1:
    torch.save(state, rank_state)
print("rank", distributed.rank(), "of", distributed.world_size(), "done")
"""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """torchrun with 2 gloo processes: 2 epochs of 8 global batches of 64, interrupted in epoch 2 and resumed."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "worker.py"
    script.write_text(WORKER.replace("{cfg}", repr(CFG)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp / "out"), str(tmp / "rank1_state.pt")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "rank 0 of 2 done" in proc.stdout and "rank 1 of 2 done" in proc.stdout
    return tmp


def before_batchnorm(state: dict) -> set:
    """The biases of the convolutions that feed a BatchNorm (Sequential(conv, BN, GELU): "X.0.bias" with a
    "X.1.running_mean"), and those BatchNorms' running means."""
    keys = set()
    for k in state:
        if k.endswith(".0.bias") and k[:-len("0.bias")] + "1.running_mean" in state:
            keys |= {k, k[:-len("0.bias")] + "1.running_mean"}
    return keys


def test_two_processes_equal_one_process_on_the_global_batch(two_process_run, tmp_path):
    """Losses of every step, the parameters and BatchNorm statistics, and the network's function, after one
    epoch and after an interrupted and resumed second one.

    Not bit-exact: the global BatchNorm statistics and the averaged gradients are sums taken in another order, so
    float32 rounding differs (~1e-6). Most parameters agree to 1e-4 relative. The exception: a convolution's bias
    right before a BatchNorm has a true gradient of exactly 0 (BatchNorm subtracts the batch mean), so what it
    receives is rounding noise, which Adam normalizes into steps of size ~lr; those biases (and the running means
    that absorb them) drift apart by ~lr * steps in either run, while the function computed in training mode
    (batch statistics: the bias cancels) stays the same. The same happens between two single-process runs
    with different thread counts."""
    x, y = load_mnist()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(TrainConfig.class_conditioned(**CFG), tmp_path, x[:512], y[:512], progress=False)
    finally:
        torch.set_num_threads(threads)
    out = two_process_run / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "model_epoch1.pt", "model_epoch2.pt"]
    ddp = load_checkpoint(out / "checkpoint.pt")
    assert ddp["epoch"] == 2 and len(ddp["losses"]) == len(single["losses"]) == 16
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), rtol=1e-4, atol=1e-5)
    assert torch.equal(ddp["rng"], single["rng"])                         # the same draws, in the same order

    x_t, t, c = torch.randn(16, 1, 28, 28), torch.rand(16), torch.eye(10)[torch.arange(16) % 10]
    for name in ("model_epoch1.pt", "model_epoch2.pt"):
        ours, ref = load_checkpoint(out / name)["model"], load_checkpoint(tmp_path / name)["model"]
        assert ours.keys() == ref.keys()                                  # no "module." prefix
        drift = before_batchnorm(ref)
        assert len(drift) == 34
        for k in ref.keys() - drift:
            torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
        steps = 8 * int(name[len("model_epoch")])
        for k in drift:                  # each run's Adam steps are at most ~lr: they part by < 2 lr steps
            assert (ours[k] - ref[k]).abs().max() < 2 * 1e-3 * steps, k
        outputs = []
        for state in (ours, ref):
            model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="class")).train()
            model.load_state_dict(state)
            with torch.no_grad():
                outputs.append(model(x_t, t, c))
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    rank1 = torch.load(two_process_run / "rank1_state.pt", weights_only=True)
    for k, v in ddp["model"].items():                                      # both ranks hold the same model
        assert torch.equal(rank1["model"][k], v), k
