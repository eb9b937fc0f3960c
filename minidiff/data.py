"""Files in and out: MNIST from the bundled IDX files, photos and drawings from disk, the value-range
conversions, the two files every run writes safely (`samples.pt` and atomic checkpoints), and the lock file that
keeps a second process from training the same model or judge at once.

Value ranges: Part B works on MNIST in [0, 1] (as the report does); Part A models see images in [-1, 1].
`to_signed` / `to_unit` convert between the two.
"""
from __future__ import annotations

import gzip
import os
import time
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

_MNIST_FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format): magic (0, 0, dtype 0x08 = uint8, ndim), ndim big-endian sizes, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not a uint8 IDX file (bad magic number); restore the MNIST files that ship "
                         f"with minidiff: `git checkout data/MNIST`")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}; restore "
                         f"the MNIST files that ship with minidiff: `git checkout data/MNIST`")
    return data.reshape(shape)


def load_mnist(train: bool = True, root: Path | str = DATA_DIR) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole MNIST split as two tensors (no per-sample Dataset: batches are index slices).

    Reads `<root>/MNIST/raw/*.gz`, the original IDX files shipped in this repo (nothing is downloaded).
    Returns:
        images: (N, 28, 28) uint8 in [0, 255]; N = 60000 (train) or 10000 (test).
        labels: (N,) int64 digits 0..9.
    """
    raw = Path(root) / "MNIST" / "raw"
    image_file, label_file = (raw / name for name in _MNIST_FILES[train])
    for f in (image_file, label_file):
        if not f.is_file():
            raise FileNotFoundError(f"MNIST file {f} is missing: it ships with minidiff, restore it with "
                                    f"`git checkout data/MNIST`")
    images = torch.from_numpy(_read_idx(image_file).copy())
    labels = torch.from_numpy(_read_idx(label_file).astype(np.int64))
    return images, labels


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (model outputs overshoot)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def load_image(path: Path | str, size: int, channels: int = 3) -> torch.Tensor:
    """Load a photo or drawing as a square image in [0, 1].

    Conversions, in order: transparency is composited onto white; 16-bit and float images are rescaled to
    8 bits; CMYK/palette/grayscale are converted to RGB (or to grayscale when channels = 1); the largest
    centred square is cropped and resized to size x size (bicubic).
    Returns:
        (1, channels, size, size) float32 in [0, 1].
    Raises:
        FileNotFoundError / ValueError with a one-line message for a missing, unreadable or tiny file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = _to_8bit_rgb(ImageOps.exif_transpose(img))   # a phone photo's EXIF orientation, applied
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e}); give a PNG or JPEG file") from None
    if min(img.size) < 8:
        raise ValueError(f"{path} is {img.size[0]}x{img.size[1]} pixels; give an image at least 8 pixels on each side")
    side = min(img.size)
    img = ImageOps.fit(img, (side, side), centering=(0.5, 0.5)).resize((size, size), Image.BICUBIC)
    if channels == 1:
        img = img.convert("L")
    elif channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    x = x.unsqueeze(-1) if x.dim() == 2 else x                  # (H, W, C)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()         # (1, C, H, W)


def _to_8bit_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (transparency onto white, 16-bit/float rescaled to 0..255)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Write a file so that no failure can leave a torn one: `write(tmp)` fills a temporary file beside `path`
    (named <name>.<pid>.tmp), which is flushed to disk and renamed over `path`. A crash at any moment leaves the old
    file or the new one; a failed write (disk full, no permission) removes the temporary file, keeps the old file
    and is one OSError line naming the file and the fix."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: a folder of that name is in the way; move it away and rerun")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if not isinstance(e, (OSError, RuntimeError)):      # Ctrl-C, or a bug: as it is
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:160]
        raise OSError(f"could not write {path} ({reason}); free some disk space or fix the folder's permissions, "
                      f"then rerun (the previous file, if any, is intact)") from e
    return path


def atomic_save(obj, path: Path | str) -> Path:
    """torch.save through atomic_write."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_verified(path: Path | str, fix: str):
    """torch.load (weights_only) of a file written by torch.save, after checking it: a damaged file is a one-line
    ValueError naming it and ending with `fix`.

    torch.save writes a zip archive that stores a CRC-32 of every record, but torch.load does not check them: a
    flipped bit in the weights would load silently. `testzip` reads every record and compares its CRC first."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
        if bad_record is not None:
            raise ValueError(f"CRC mismatch in {bad_record}")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zipfile and torch raise several types for truncated/corrupted archives
        reason = (str(e).strip().splitlines() or [""])[0][:120]
        raise ValueError(f"{path} is corrupted or truncated ({type(e).__name__}: {reason}); {fix}") from None


def hold(path: Path | str, wait: bool = False):
    """An exclusive lock for this process on the file `path`, which then holds its PID: fcntl.flock (msvcrt on
    Windows). The operating system releases the lock when the process ends, however it ends, so a lock file left by a
    killed process is stale and simply taken. If another process holds the lock: wait=False raises BlockingIOError
    with the holder's PID (a string) as its only argument; wait=True waits for it. Returns the open file, for
    release()."""
    path = Path(path)
    while True:
        f = open(path, "a+")
        f.seek(0)
        while True:
            try:
                if os.name == "nt":
                    import msvcrt
                    msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                else:
                    import fcntl
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not wait:
                    owner = f.read().strip() or "unknown"
                    f.close()
                    raise BlockingIOError(owner) from None
                time.sleep(0.5)
        if path.exists() and os.path.samefile(path, f.name):
            break
        f.close()                                  # its holder removed the file as we locked it: lock the new one
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def release(f) -> None:
    """Remove the lock file and release the lock of hold() (in that order, so no one can lock a file about to
    vanish)."""
    if os.name == "nt":
        f.close()
    Path(f.name).unlink(missing_ok=True)
    f.close()


def save_samples(path: Path | str, images: torch.Tensor, labels: Optional[torch.Tensor] = None, **extra) -> Path:
    """Write a stage's samples.pt (DESIGN §4), atomically:

        {"images": (N, C, H, W) float32 in [0, 1] on the CPU, "labels": (N,) int64 (where conditioned), **extra}

    extra: what else the stage records per sample, e.g. prompts=[...] (N strings) or settings=[...].
    """
    if images.dim() != 4:
        raise ValueError(f"samples are (N, C, H, W) images, got shape {tuple(images.shape)}")
    record = {"images": images.detach().float().cpu().clamp(0, 1)}
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
        if labels.shape != (images.shape[0],):
            raise ValueError(f"samples.pt needs one label per image: {tuple(labels.shape)} labels, "
                             f"{images.shape[0]} images")
        record["labels"] = labels
    return atomic_save({**record, **extra}, path)
