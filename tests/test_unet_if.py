"""minidiff.unet_if: the IF UNet against the published parameter counts, diffusers' key set and outputs
(a TEST-ONLY oracle), and derivations of its small pieces."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from minidiff.schedule import NoiseSchedule
from minidiff.unet_if import (IFUNet, IFUNetConfig, sinusoidal_embedding, stage2_condition, stage2_input,
                              STAGE2_NOISE_LEVEL)

from conftest import DEEPFLOYD_FIXTURES

FULL = {"IF-I-XL-v1.0": 4_304_695_110, "IF-II-L-v1.0": 1_243_277_190}



def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, norms included (their defaults, ones and zeros, would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            std = 0.1 if p.dim() <= 1 else 1.0 / math.sqrt(p[0].numel())
            p.copy_(base + std * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs(config: IFUNetConfig, B: int = 2, L: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    size = config.sample_size
    x_t = torch.randn(B, config.in_channels, size, size, generator=g)
    text = 3 * torch.randn(B, L, config.encoder_hid_dim, generator=g)  # T5 outputs are not unit scale
    return x_t, text


# --- structure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FULL)
def test_full_config_on_meta_has_published_parameter_count_and_diffusers_keys(name):
    d = json.loads((DEEPFLOYD_FIXTURES / f"{name}.unet.config.json").read_text())
    with torch.device("meta"):
        ours = IFUNet(IFUNetConfig.from_dict(d))
    assert sum(p.numel() for p in ours.parameters()) == FULL[name]
    assert not list(ours.buffers())  # nothing that strict loading on meta would leave behind
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**{k: v for k, v in d.items() if not k.startswith("_")})
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert set(ours_sd) == set(ref_sd)
    assert all(ours_sd[k].shape == ref_sd[k].shape for k in ref_sd)


def test_default_config_is_if_i_xl_and_round_trips_through_config_json():
    d = json.loads((DEEPFLOYD_FIXTURES / "IF-I-XL-v1.0.unet.config.json").read_text())
    assert IFUNetConfig.from_dict(d) == IFUNetConfig()
    stage2 = IFUNetConfig.from_dict(json.loads((DEEPFLOYD_FIXTURES / "IF-II-L-v1.0.unet.config.json").read_text()))
    assert IFUNetConfig.from_dict(json.loads(json.dumps(stage2.to_dict()))) == stage2


@pytest.mark.parametrize("key, value", [
    ("act_fn", "silu"), ("resnet_time_scale_shift", "default"), ("class_embed_type", "projection"),
    ("down_block_types", ["CrossAttnDownBlock2D"] * 4), ("only_cross_attention", True),
    ("time_embedding_type", "fourier"), ("attention_head_dim", [64, 64, 64, 64]), ("brand_new_option", 1),
    ("layers_per_block", [3, 3]),
])
def test_config_refuses_what_we_do_not_implement_in_one_line(key, value):
    d = json.loads((DEEPFLOYD_FIXTURES / "IF-I-XL-v1.0.unet.config.json").read_text())
    d[key] = value
    with pytest.raises(ValueError) as err:
        IFUNetConfig.from_dict(d)
    assert key in str(err.value) and "\n" not in str(err.value)


# --- parity with diffusers (fp32, same random weights) -----------------------------------------------------


@pytest.mark.parametrize("stage", ["I", "II"])
def test_matches_diffusers_unet2dcondition(stage, tiny_unet_dicts):
    diffusers = pytest.importorskip("diffusers")
    d = tiny_unet_dicts[stage]
    torch.manual_seed(0)
    ref = randomize_(diffusers.UNet2DConditionModel(**{k: v for k, v in d.items() if not k.startswith("_")}))
    ours = IFUNet(IFUNetConfig.from_dict(d)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x_t, text = inputs(ours.config)
    t = torch.tensor([981, 17])
    labels = torch.tensor([250, 40]) if stage == "II" else None
    with torch.no_grad():
        expected = ref(x_t, t, encoder_hidden_states=text, class_labels=labels).sample
        got = ours(x_t, t, text, class_labels=labels)
        expected_int = ref(x_t, 500, encoder_hidden_states=text, class_labels=labels).sample
        got_int = ours(x_t, 500, text, class_labels=labels)
    assert got.shape == (2, 6, ours.config.sample_size, ours.config.sample_size)
    assert expected.abs().mean() > 0.1  # a real signal, not a near-zero output
    assert (got - expected).abs().max() <= 1e-4
    assert (got_int - expected_int).abs().max() <= 1e-4


# --- derivations -------------------------------------------------------------------------------------------


def test_sinusoid_is_cos_then_sin_of_geometric_frequencies():
    # dim 4: frequencies 10000^(-0/2) = 1 and 10000^(-1/2) = 0.01
    t = torch.tensor([0, 3])
    got = sinusoidal_embedding(t, 4)
    want = torch.tensor([[1.0, 1.0, 0.0, 0.0], [math.cos(3), math.cos(0.03), math.sin(3), math.sin(0.03)]])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(sinusoidal_embedding(t, 4, flip_sin_to_cos=False), want[:, [2, 3, 0, 1]])


def test_batched_forward_equals_per_image_forward(tiny_unet_dicts):
    """No mixing across the batch: CFG runs cond and uncond as one batch (DESIGN §2)."""
    model = randomize_(IFUNet(IFUNetConfig.from_dict(tiny_unet_dicts["II"])))
    x_t, text = inputs(model.config, B=2)
    t, labels = torch.tensor([10, 900]), torch.tensor([250, 250])
    with torch.no_grad():
        both = model(x_t, t, text, labels)
        one = torch.cat([model(x_t[i:i + 1], t[i:i + 1], text[i:i + 1], labels[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(both, one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_follows_input_dtype_and_stays_close_to_float32(tiny_unet_dicts, dtype):
    model = randomize_(IFUNet(IFUNetConfig.from_dict(tiny_unet_dicts["I"])))
    x_t, text = inputs(model.config)
    text = 30 * text  # large activations: norms and softmax must keep float32 statistics
    with torch.no_grad():
        ref = model(x_t, 500, text)
        out = model.to(dtype)(x_t.to(dtype), 500, text.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() / ref.abs().max() < (0.05 if dtype == torch.bfloat16 else 0.01)


def test_stage2_needs_its_noise_level_and_sizes_must_divide(tiny_unet_dicts):
    model = IFUNet(IFUNetConfig.from_dict(tiny_unet_dicts["II"]))
    x_t, text = inputs(model.config)
    with pytest.raises(ValueError, match="class_labels"):
        model(x_t, 1, text)
    with pytest.raises(ValueError, match="divisible by 16"):
        model(x_t[..., :24, :24], 1, text, torch.tensor([250, 250]))


def test_stage2_condition_upsamples_bilinear_aligned_and_noises_to_level_250():
    """[A.1] on the upsampled image: sqrt(alpha_bar_250) up + sqrt(1 - alpha_bar_250) eps."""
    schedule = NoiseSchedule.cosine()
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    eps = torch.randn(2, 3, 16, 16)
    cond, labels = stage2_condition(low, (16, 16), schedule, eps=eps)
    up = F.interpolate(low, size=(16, 16), mode="bilinear", align_corners=True)
    assert torch.equal(up[..., 0, 0], low[..., 0, 0]) and torch.equal(up[..., -1, -1], low[..., -1, -1])  # corners kept
    a = schedule.alpha_bar[STAGE2_NOISE_LEVEL]
    torch.testing.assert_close(cond, a.sqrt() * up + (1 - a).sqrt() * eps)
    assert labels.tolist() == [250, 250] and labels.dtype == torch.int64
    assert stage2_input(torch.zeros(2, 3, 16, 16), cond).shape == (2, 6, 16, 16)
    diffusers = pytest.importorskip("diffusers")
    noising = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000)
    torch.testing.assert_close(cond, noising.add_noise(up, eps, labels))
