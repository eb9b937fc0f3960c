"""Inputs: the bundled MNIST files and the image loader's conversions and errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.data import load_image, load_mnist, to_signed, to_unit


def test_mnist_is_read_from_the_bundled_files():
    x, y = load_mnist(train=True)
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert y[:5].tolist() == [5, 0, 4, 1, 9]                  # the original order of the IDX file
    assert torch.bincount(y).min() > 5000
    xt, yt = load_mnist(train=False)
    assert xt.shape == (10000, 28, 28) and yt[:3].tolist() == [7, 2, 1]


def test_value_range_conversions_are_inverse():
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(to_unit(to_signed(x)), x)


@pytest.mark.parametrize("mode,size", [("RGB", (300, 200)), ("RGBA", (64, 64)), ("L", (50, 80)),
                                       ("CMYK", (40, 40)), ("P", (33, 33)), ("I;16", (40, 30))])
def test_any_image_mode_and_size_becomes_a_square_rgb_tensor(tmp_path, mode, size):
    arr = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(
        arr[:, :, 0].astype(np.uint16) * 257)                                    # a 16-bit grayscale image
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    x = load_image(path, size=32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert load_image(path, size=28, channels=1).shape == (1, 1, 28, 28)


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert torch.allclose(load_image(tmp_path / "clear.png", 16), torch.ones(1, 3, 16, 16))


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 (rotate 90° clockwise to view) loads as it is viewed."""
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = 255                                       # stored: white left half
    viewed = Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270)        # viewed: white top half
    exif = Image.Exif()
    exif[0x0112] = 6                                           # the Orientation tag
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    viewed.save(tmp_path / "viewed.png")
    x, y = load_image(tmp_path / "phone.jpg", 32), load_image(tmp_path / "viewed.png", 32)
    assert (x - y).abs().max() < 0.1                           # JPEG rounding only
    assert x[..., :8, :].mean() > 0.9 and x[..., -8:, :].mean() < 0.1


def test_bad_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image(tmp_path / "missing.png", 64)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read") as e:
        load_image(tmp_path / "notes.png", 64)
    assert "\n" not in str(e.value)
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ValueError, match="at least 8 pixels"):
        load_image(tmp_path / "dot.png", 64)
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64)).save(good)
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match="cannot read"):
        load_image(good, 64)


def test_missing_mnist_files_are_a_one_line_error_not_a_download(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_mnist(train=False, root=tmp_path)
    assert "\n" not in str(e.value) and "git checkout data/MNIST" in str(e.value)


def test_samples_pt_format(tmp_path):
    from minidiff.data import save_samples
    images = torch.linspace(-0.5, 1.5, 2 * 3 * 4 * 4).view(2, 3, 4, 4).double()
    path = save_samples(tmp_path / "samples.pt", images, [3, 7], prompts=["3", "7"])
    s = torch.load(path, weights_only=True)
    assert sorted(s) == ["images", "labels", "prompts"] and s["prompts"] == ["3", "7"]
    assert s["images"].dtype == torch.float32 and torch.equal(s["images"], images.float().clamp(0, 1))
    assert s["labels"].dtype == torch.int64 and s["labels"].tolist() == [3, 7]
    assert "labels" not in torch.load(save_samples(tmp_path / "u.pt", images), weights_only=True)
    assert not list(tmp_path.glob("*.tmp"))                                      # written atomically
    with pytest.raises(ValueError, match="one label per image"):
        save_samples(tmp_path / "bad.pt", images, [1, 2, 3])
    with pytest.raises(ValueError, match="N, C, H, W"):
        save_samples(tmp_path / "bad.pt", images[0])
