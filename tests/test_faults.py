"""Faults and bad inputs: a process killed while writing a checkpoint, a snapshot lost between two writes or a write
that fails (a full disk), damaged checkpoints, hostile image files, and bit-for-bit reproducibility of sampling from a
seed. (Bad command-line input, two trainers on one folder: tests/test_stages_bad_inputs.py.)

(A corrupted prompt-embedding cache is covered by tests/test_prompts.py::test_corrupted_cache_is_detected.)
"""
import errno
import io
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.data import load_image, load_mnist
from minidiff.train import TrainConfig, load_checkpoint, load_model, train, training_run

REPO = Path(__file__).resolve().parent.parent


def tiny(**kw):
    return TrainConfig.class_conditioned(**{**dict(num_hiddens=8, epochs=2, batch_size=64, snapshot_epochs=()), **kw})


@pytest.fixture(scope="module")
def subset():
    x, y = load_mnist()
    return x[:512], y[:512]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------

KILLED_WRITER = """
import io, sys, time
import torch
from minidiff.data import load_mnist
from minidiff.train import TrainConfig, train

real_save = torch.save

def save_half_then_hang(obj, f, *a, **k):     # the epoch-2 checkpoint: write half of it, then wait to be killed
    if isinstance(obj, dict) and obj.get("epoch") == 2 and "optimizer" in obj:
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        with open(f, "wb") as torn:
            torn.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            torn.flush()
        print("WRITING", flush=True)
        time.sleep(600)
    return real_save(obj, f, *a, **k)

torch.save = save_half_then_hang
torch.set_num_threads(1)
x, y = load_mnist()
train(TrainConfig.class_conditioned(**{cfg}), sys.argv[1], x[:512], y[:512], progress=False)
"""


def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, subset):
    """SIGKILL in the middle of writing epoch 2's checkpoint: checkpoint.pt still holds epoch 1 (the write goes to
    checkpoint.pt.<pid>.tmp, renamed only when complete), and rerunning resumes from it, removes the torn temporary
    file and finishes."""
    cfg = dict(num_hiddens=8, epochs=2, batch_size=64, snapshot_epochs=())
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER.replace("{cfg}", repr(cfg)))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()                 # blocks until the child is half-way through the write
        assert line.strip() == "WRITING", line + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(list(out.glob("checkpoint.pt.*.tmp"))) == 1    # the torn file is the temporary one
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    state = train(tiny(), out, *subset, progress=False)
    assert state["epoch"] == 2 and len(state["losses"]) == 2 * 8
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    assert not list(out.glob("*.tmp"))                         # the stale one removed, the new one renamed


def _same_weights(a: Path, b: Path) -> bool:
    a, b = load_checkpoint(a), load_checkpoint(b)
    return a["epoch"] == b["epoch"] and all(torch.equal(a[w][k], b[w][k]) for w in ("model", "ema") for k in a[w])


def test_a_snapshot_lost_after_its_checkpoint_is_restored_by_the_rerun(tmp_path, subset):
    """The death an older minidiff allowed (the checkpoint of epoch 2 written, then a kill before its snapshot), or
    a deleted snapshot: the rerun has nothing left to train and writes the snapshot from the checkpoint."""
    cfg = tiny(snapshot_epochs=(1,), ema=0.999)
    train(cfg, tmp_path / "ref", *subset, progress=False)
    out = tmp_path / "run"
    train(cfg, out, *subset, progress=False)
    (out / "model_epoch2.pt").unlink()
    assert training_run(out / "checkpoint.pt").weights[-1] == (2, out / "checkpoint.pt")   # what b2_3 would sample
    train(cfg, out, *subset, progress=False)
    assert _same_weights(out / "model_epoch2.pt", tmp_path / "ref" / "model_epoch2.pt")
    assert training_run(out / "checkpoint.pt").weights == [(1, out / "model_epoch1.pt"), (2, out / "model_epoch2.pt")]


@pytest.mark.parametrize("fails", ["model_epoch2.pt", "checkpoint.pt"])
def test_a_write_that_fails_at_epoch_2_is_redone_by_the_rerun(tmp_path, subset, monkeypatch, fails):
    """The disk fills up (or the process dies) while epoch 2's snapshot is written, or its checkpoint right after:
    one OSError line naming the file, epoch 1's files intact, no temporary file; the rerun redoes epoch 2 and ends
    exactly as an uninterrupted run, with every snapshot."""
    cfg = tiny(snapshot_epochs=(1,), ema=0.999)
    reference = train(cfg, tmp_path / "ref", *subset, progress=False)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if Path(f).name.startswith(fails + ".") and obj.get("epoch") == 2:
            Path(f).write_bytes(b"the first blocks")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    with pytest.raises(OSError) as e:
        train(cfg, out, *subset, progress=False)
    monkeypatch.undo()
    assert str(e.value).startswith(f"could not write {out / fails} ([Errno 28] No space left on device)")
    assert "\n" not in str(e.value) and not list(out.glob("*.tmp"))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert (out / "model_epoch2.pt").exists() == (fails == "checkpoint.pt")   # written first: the checkpoint failed
    state = train(cfg, out, *subset, progress=False)
    assert state["losses"] == reference["losses"]
    for name in ("model_epoch1.pt", "model_epoch2.pt", "checkpoint.pt"):
        assert _same_weights(out / name, tmp_path / "ref" / name), name


@pytest.mark.parametrize("where", [0.5, 0.25, 0.75])
def test_flipped_bits_in_a_checkpoint_are_detected(tmp_path, subset, where):
    """torch.load itself loads a bit flip in the tensor data without complaint; load_checkpoint checks the
    archive's CRC-32s, and training refuses to resume from the damaged file. The flip lands at `where` of the largest
    tensor record's bytes (the zip's alignment padding between records is not data, and no CRC covers it)."""
    import zipfile
    train(tiny(epochs=1), tmp_path, *subset, progress=False)
    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    with open(path, "rb") as f:                      # the data follows the 30-byte local header, name and extra field
        f.seek(record.header_offset + 26)
        name_length, extra_length = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    start = record.header_offset + 30 + name_length + extra_length
    raw = bytearray(path.read_bytes())
    raw[start + int(record.file_size * where)] ^= 0x04
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted") as e:
        load_model(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="corrupted"):
        train(tiny(epochs=1), tmp_path, *subset, progress=False)


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name in ("empty.pt", "text.pt"):
        with pytest.raises(ValueError, match="corrupted or truncated"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(ValueError, match="not a minidiff checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="run the training stage"):
        load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------------------------------
# Images (data.load_image): converted as documented, or a one-line ValueError / FileNotFoundError
# ---------------------------------------------------------------------------------------------------------------

def one_line_error(fn, *args):
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        fn(*args)
    assert "\n" not in str(e.value) and str(e.value)
    return str(e.value)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    """PIL refuses images over 2 * MAX_IMAGE_PIXELS (a small file that decodes to gigabytes)."""
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert "DecompressionBombError" in one_line_error(load_image, tmp_path / "bomb.png", 32)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "gif", "bmp"])
def test_truncated_files(tmp_path, fmt):
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"x.{fmt}"
    Image.fromarray(arr).save(path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    message = one_line_error(load_image, path, 32)
    assert str(path) in message


def test_small_odd_and_non_images(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert "at least 8 pixels" in one_line_error(load_image, tmp_path / "dot.png", 32)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "pickle.png").write_bytes(b"\x80\x04K\x01.")
    for name in ("empty.png", "pickle.png"):
        assert "cannot read" in one_line_error(load_image, tmp_path / name, 32)
    assert "not found" in one_line_error(load_image, tmp_path, 32)          # a folder is not an image file
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    assert "channels" in one_line_error(load_image, tmp_path / "ok.png", 16, 4)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "I", "F", "1", "LA", "PA", "YCbCr", "LAB", "HSV"])
def test_every_mode_is_converted_or_refused_in_one_line(tmp_path, mode):
    """CMYK, 16-bit and 32-bit integer/float, bilevel, alpha and palette+alpha become RGB in [0, 1] (data.py)."""
    g = np.random.default_rng(1)
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray(g.integers(0, 60000, (20, 24)).astype({"I;16": np.uint16, "I": np.int32,
                                                                       "F": np.float32}[mode]))
    else:
        img = Image.fromarray(g.integers(0, 255, (20, 24, 3), dtype=np.uint8)).convert(
            "RGBA" if mode == "PA" else mode if mode not in ("LAB", "HSV") else "RGB")
        if mode == "PA":
            img = img.convert("P").convert("PA")
        elif mode in ("LAB", "HSV"):
            img = Image.frombytes(mode, img.size, img.tobytes())
    path = tmp_path / "x.tiff"
    try:
        img.save(path)
    except (OSError, ValueError, KeyError):
        pytest.skip(f"PIL cannot write {mode} as TIFF")
    try:
        x = load_image(path, 16)
    except ValueError as e:                      # e.g. a colour space PIL cannot convert to RGB
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_random_image_files_never_raise_anything_else(tmp_path_factory, monkeypatch):
    """Hypothesis: random sizes, modes, formats, pixels, truncations and flipped bytes. load_image returns a
    (1, C, size, size) float32 tensor in [0, 1] or raises a one-line ValueError, nothing else."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)   # corrupted headers must not allocate gigabytes
    folder = tmp_path_factory.mktemp("random_images")

    @hypothesis.settings(max_examples=30, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(
        mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I;16", "I", "F"]),
        fmt=st.sampled_from(["png", "jpeg", "tiff", "bmp", "gif", "webp"]),
        width=st.integers(1, 40), height=st.integers(1, 40), seed=st.integers(0, 2 ** 16),
        damage=st.sampled_from(["none", "truncate", "flip", "random bytes"]),
        size=st.sampled_from([8, 28]), channels=st.sampled_from([1, 3]),
    )
    def check(mode, fmt, width, height, seed, damage, size, channels):
        g = np.random.default_rng(seed)
        path = folder / f"x.{fmt}"
        if damage == "random bytes":
            path.write_bytes(g.bytes(int(g.integers(0, 2000))))
        else:
            arr = g.integers(0, 256, (height, width, 4), dtype=np.uint8)
            if mode in ("I;16", "I", "F"):
                img = Image.fromarray(arr[:, :, 0].astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
            else:
                img = Image.fromarray(arr, "RGBA").convert(mode)
            buf = io.BytesIO()
            try:
                img.save(buf, format=fmt)
            except (OSError, ValueError, KeyError):
                hypothesis.reject()                   # this format cannot hold this mode
            raw = bytearray(buf.getvalue())
            if damage == "truncate":
                raw = raw[: int(g.integers(0, len(raw)))]
            elif damage == "flip":
                for i in g.integers(0, len(raw), 3):
                    raw[i] ^= int(g.integers(1, 256))
            path.write_bytes(bytes(raw))
        try:
            x = load_image(path, size, channels)
        except (ValueError, FileNotFoundError) as e:
            assert "\n" not in str(e) and str(e)
            return
        assert x.shape == (1, channels, size, size) and x.dtype == torch.float32
        assert bool(torch.isfinite(x).all()) and 0 <= float(x.min()) and float(x.max()) <= 1

    check()


# ---------------------------------------------------------------------------------------------------------------
# Reproducibility
# ---------------------------------------------------------------------------------------------------------------

def test_a_seed_reproduces_part_b_samples_bit_for_bit():
    """The Part B sampler (DDPM, 300 steps, CFG) and a stochastic DDIM run, twice from the same seed on CPU."""
    from minidiff import ddpm
    from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig
    from minidiff.sampling import ddim_step, spaced_timesteps
    torch.manual_seed(0)
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="class")).eval()
    digits = torch.tensor([0, 3, 9])

    def draw(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return ddpm.sample(model, torch.randn(3, 1, 28, 28, generator=g), digits, generator=g, **kw)
    assert torch.equal(draw(7), draw(7))
    ddim = dict(timesteps=spaced_timesteps(300, 10), step=partial(ddim_step, eta=0.5))
    assert torch.equal(draw(2, **ddim), draw(2, **ddim))
