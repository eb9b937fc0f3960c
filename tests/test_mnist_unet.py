"""The report's MNIST UNet (DESIGN §5 Part B): shapes, wiring and parameter counts from the spec."""
import pytest
import torch

from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig


def spec_parameter_count(D: int, kind: str, num_classes: int = 10) -> int:
    """Count the parameters from the block list of the report, independently of the module code."""
    conv = lambda cin, cout, k: cin * cout * k * k + cout          # weight + bias
    bn = lambda c: 2 * c                                            # gamma + beta
    linear = lambda i, o: i * o + o
    Conv = lambda cin, cout: conv(cin, cout, 3) + bn(cout)
    ConvBlock = lambda cin, cout: Conv(cin, cout) + Conv(cout, cout)
    DownBlock = lambda cin, cout: conv(cin, cout, 3) + bn(cout) + ConvBlock(cout, cout)
    UpBlock = lambda cin, cout: conv(cin, cout, 4) + bn(cout) + ConvBlock(cout, cout)
    FCBlock = lambda i, o: linear(i, o) + linear(o, o)
    n = (ConvBlock(1, D) + DownBlock(D, D) + DownBlock(D, 2 * D)
         + conv(2 * D, 2 * D, 7) + bn(2 * D)                        # Unflatten (Flatten has no parameters)
         + UpBlock(4 * D, D) + UpBlock(2 * D, D) + ConvBlock(2 * D, D) + conv(D, 1, 3))
    if kind != "denoiser":
        n += FCBlock(1, 2 * D) + FCBlock(1, D)
    if kind == "class":
        n += FCBlock(num_classes, 2 * D) + FCBlock(num_classes, D)
    return n


@pytest.mark.parametrize("D", [8, 64, 128])
@pytest.mark.parametrize("kind", ["denoiser", "time", "class"])
def test_parameter_count_matches_the_spec(D, kind):
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=D, kind=kind))
    assert sum(p.numel() for p in model.parameters()) == spec_parameter_count(D, kind)


def test_report_denoiser_size():
    # The report's D = 128 single-step denoiser has about 7.9 M parameters.
    n = sum(p.numel() for p in MNISTUNet(MNISTUNetConfig(128, "denoiser")).parameters())
    assert 7.8e6 < n < 8.0e6


@pytest.mark.parametrize("kind", ["denoiser", "time", "class"])
def test_shapes_and_intermediate_resolutions(kind):
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind=kind)).eval()
    seen = {}
    for name in ["down0", "down1", "down2", "unflatten", "up1", "up2"]:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
    x = torch.randn(3, 1, 28, 28)
    t = torch.rand(3) if kind != "denoiser" else None
    c = torch.eye(10)[:3] if kind == "class" else None
    assert model(x, t, c).shape == (3, 1, 28, 28)
    assert seen == {"down0": (3, 8, 28, 28), "down1": (3, 8, 14, 14), "down2": (3, 16, 7, 7),
                    "unflatten": (3, 16, 7, 7), "up1": (3, 8, 14, 14), "up2": (3, 8, 28, 28)}


def test_conditioning_changes_the_output_and_wrong_inputs_fail():
    torch.manual_seed(0)
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="class")).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.full((2,), 0.5)
    c0, c1 = torch.zeros(2, 10), torch.eye(10)[:2]
    assert not torch.allclose(model(x, t, c0), model(x, t, c1))
    assert not torch.allclose(model(x, t, c1), model(x, torch.zeros(2), c1))
    with pytest.raises(ValueError, match="takes"):
        model(x, t)
    with pytest.raises(ValueError):
        MNISTUNetConfig(kind="text")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_on_an_nhwc_tensor_is_nn_gelu_forward_and_backward(dtype):
    """GELU passes a channels_last input through its (B, H, W, C) view (a faster CPU kernel): the same numbers, the
    same gradient, and the output keeps the channels_last layout."""
    from minidiff.mnist_unet import GELU
    x = torch.randn(4, 16, 7, 7, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    x_ref = x.detach().contiguous().requires_grad_()
    y, y_ref = GELU()(x), torch.nn.GELU()(x_ref)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(y.contiguous(), y_ref)
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(x.grad.contiguous(), x_ref.grad)
    plain = torch.randn(3, 5, dtype=dtype)
    assert torch.equal(GELU()(plain), torch.nn.GELU()(plain))              # any other input: nn.GELU itself
