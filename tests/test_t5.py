"""T5 v1.1 encoder: bucket formula, config parsing, parity with transformers' T5EncoderModel (a test-only
oracle) on tiny random configs, identities that need no oracle, and the full-size XXL shapes on meta."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minidiff.t5 import T5Config, T5Encoder, padding_bias, relative_position_bucket

FIXTURES = Path(__file__).parent / "fixtures" / "deepfloyd"
XXL_CONFIG = json.loads((FIXTURES / "IF-I-XL-v1.0.text_encoder.config.json").read_text())

# Tiny v1.1 configs; max_distance small enough that ~40-token sequences reach the log-spaced buckets
# and the cap (|offset| >= max_distance).
TINY = [
    dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
         relative_attention_num_buckets=32, relative_attention_max_distance=12),
    dict(vocab_size=50, d_model=24, d_kv=4, d_ff=40, num_layers=4, num_heads=6,
         relative_attention_num_buckets=16, relative_attention_max_distance=9),
]
L = 40


def tiny_ours(cfg: dict, seed: int = 0) -> T5Encoder:
    torch.manual_seed(seed)
    model = T5Encoder(T5Config(**cfg)).eval()
    with torch.no_grad():  # make every part matter: larger random weights, non-trivial norms and biases
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("relative_attention_bias.weight"):
                p.normal_(0.0, 1.0)
            elif name != "shared.weight":
                p.normal_(0.0, p.shape[1] ** -0.5)
    return model


def ids_and_mask(vocab_size: int, lengths: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, vocab_size, (len(lengths), L), generator=g)
    attention_mask = torch.zeros(len(lengths), L, dtype=torch.long)
    for i, n in enumerate(lengths):
        input_ids[i, n - 1] = 1   # </s>
        input_ids[i, n:] = 0      # pad
        attention_mask[i, :n] = 1
    return input_ids, attention_mask


# ---------------------------------------------------------------------------------------------- buckets


def test_bucket_formula_by_hand():
    """32 buckets, max distance 128: offsets 0..7 have their own bucket, keys to the right are shifted by 16,
    then log-spaced buckets: 8 + floor(log(n/8) / log(16) * 8), capped at 15."""
    rel = torch.tensor([0, -1, -7, 1, 7, -8, -11, -12, -16, -127, -128, -1000, 8, 16, 127, 1000])
    expected = [0, 1, 7, 17, 23, 8, 8, 9, 10, 15, 15, 15, 24, 26, 31, 31]
    assert relative_position_bucket(rel, 32, 128).tolist() == expected


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (32, 12), (16, 9), (8, 20)])
def test_bucket_matches_transformers(num_buckets, max_distance):
    modeling_t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-300, 301)
    theirs = modeling_t5.T5Attention._relative_position_bucket(rel, True, num_buckets, max_distance)
    ours = relative_position_bucket(rel, num_buckets, max_distance)
    assert torch.equal(ours, theirs)
    assert ours.min() >= 0 and ours.max() < num_buckets


def test_padding_bias_is_finite_and_dtype_safe():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    for dtype in (torch.float32, torch.bfloat16):
        b = padding_bias(mask, dtype)
        assert b.shape == (2, 1, 1, 3) and b.dtype == dtype and torch.isfinite(b).all()
        assert b[0, 0, 0, :2].eq(0).all() and b[0, 0, 0, 2] == torch.finfo(dtype).min


# ---------------------------------------------------------------------------------------------- config


def test_config_from_reference_json_is_the_default():
    assert T5Config.from_dict(XXL_CONFIG) == T5Config()


@pytest.mark.parametrize("change", [
    {"feed_forward_proj": "relu"},
    {"feed_forward_proj": "gated-silu"},
    {"dense_act_fn": "gelu"},
    {"model_type": "umt5"},
    {"is_decoder": True},
    {"d_model": None},
])
def test_config_refuses_what_we_do_not_implement(change):
    d = dict(XXL_CONFIG, **change)
    if change.get("d_model", 0) is None:
        del d["d_model"]
    with pytest.raises(ValueError) as e:
        T5Config.from_dict(d)
    assert "\n" not in str(e.value)


def test_config_is_frozen():
    with pytest.raises(Exception):
        T5Config().d_model = 8


# ---------------------------------------------------------------------------------------------- identities


@pytest.mark.parametrize("cfg", TINY)
def test_padding_does_not_change_real_tokens(cfg):
    """With the mask, real tokens never see pads, and the position bias between real tokens does not depend
    on the padded length: the padded sequence's real positions equal the unpadded sequence's outputs."""
    model = tiny_ours(cfg)
    input_ids, attention_mask = ids_and_mask(cfg["vocab_size"], [L, 13, 31])
    with torch.no_grad():
        padded = model(input_ids, attention_mask)
        for i, n in enumerate([L, 13, 31]):
            alone = model(input_ids[i : i + 1, :n])
            torch.testing.assert_close(padded[i, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_strict_load_on_meta_and_follow_dtype():
    cfg = TINY[0]
    src = tiny_ours(cfg)
    with torch.device("meta"):
        model = T5Encoder(T5Config(**cfg))
    model.load_state_dict(src.state_dict(), strict=True, assign=True)
    input_ids, attention_mask = ids_and_mask(cfg["vocab_size"], [L, 20])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids, attention_mask), src(input_ids, attention_mask))
        out = model.to(torch.bfloat16)(input_ids, attention_mask)
    assert out.dtype == torch.bfloat16 and out.shape == (2, L, cfg["d_model"])


def test_package_does_not_import_oracles():
    code = ("import sys, minidiff.t5, minidiff.prompts; "
            "bad = [m for m in ('transformers', 'diffusers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- parity


def transformers_twin(cfg: dict, ours: T5Encoder):
    """transformers' T5EncoderModel with our weights (strict: same keys, bar the tied embed_tokens copy)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(**cfg, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                                   attn_implementation="eager")
    theirs = transformers.T5EncoderModel(config).eval()
    their_keys = set(theirs.state_dict()) - {"encoder.embed_tokens.weight"}
    assert their_keys == set(ours.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=False)  # embed_tokens is tied to shared
    # and the other way round, strict, as the hub loader does:
    sd = {k: v for k, v in theirs.state_dict().items() if k != "encoder.embed_tokens.weight"}
    ours.load_state_dict(sd, strict=True)
    return theirs


@pytest.mark.parametrize("cfg", TINY)
@pytest.mark.parametrize("masked", [False, True])
def test_parity_with_transformers_fp32(cfg, masked):
    ours = tiny_ours(cfg)
    theirs = transformers_twin(cfg, ours)
    input_ids, attention_mask = ids_and_mask(cfg["vocab_size"], [L, 7, 25])
    mask = attention_mask if masked else None
    with torch.no_grad():
        expected = theirs(input_ids=input_ids, attention_mask=mask).last_hidden_state
        got = ours(input_ids, mask)
    assert (got - expected).abs().max() <= 1e-5
    if masked:  # the mask matters (else this test would not test it)
        assert (got - ours(input_ids)).abs().max() > 1e-2


# bf16 tolerance, stated: outputs are RMS-normalized (|x| up to ~5 here); bf16 keeps 8 mantissa bits through
# 3-4 blocks of deliberately large random weights. Measured over seeds: max abs error vs fp32 0.09-0.15
# (transformers in bf16: 0.09-0.21), mean abs error 0.009-0.015 (transformers: 0.010-0.015).
BF16_MAX_ABS = 0.25
BF16_MEAN_ABS = 0.02


@pytest.mark.parametrize("cfg", TINY)
def test_parity_with_transformers_bf16(cfg):
    """bf16: ours and transformers (both in bf16) agree with the fp32 result within the stated tolerance,
    agree with each other within it, and ours is no less accurate than transformers (mean error, 25% slack)."""
    ours = tiny_ours(cfg)
    theirs = transformers_twin(cfg, ours)
    input_ids, attention_mask = ids_and_mask(cfg["vocab_size"], [L, 7, 25])
    with torch.no_grad():
        ref32 = ours(input_ids, attention_mask)
        ours16 = ours.to(torch.bfloat16)(input_ids, attention_mask)
        theirs16 = theirs.to(torch.bfloat16)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert ours16.dtype == torch.bfloat16
    err_ours, err_theirs = (ours16.float() - ref32).abs(), (theirs16.float() - ref32).abs()
    assert err_ours.max() <= BF16_MAX_ABS and err_ours.mean() <= BF16_MEAN_ABS
    assert (ours16.float() - theirs16.float()).abs().max() <= BF16_MAX_ABS
    assert err_ours.mean() <= 1.25 * err_theirs.mean()


# ---------------------------------------------------------------------------------------------- full size


def test_full_size_xxl_on_meta():
    with torch.device("meta"):
        model = T5Encoder(T5Config.from_dict(XXL_CONFIG))
    assert sum(p.numel() for p in model.parameters()) == 4_762_310_656
    sd = model.state_dict()
    assert sd["shared.weight"].shape == (32128, 4096)
    assert sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape == (32, 64)
    assert sd["encoder.block.23.layer.1.DenseReluDense.wo.weight"].shape == (4096, 10240)
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in sd
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        theirs = transformers.T5EncoderModel(transformers.T5Config(**XXL_CONFIG))
    their_keys = {k: tuple(v.shape) for k, v in theirs.state_dict().items() if k != "encoder.embed_tokens.weight"}
    assert their_keys == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.slow
def test_full_size_xxl_bf16_random_weights_encodes():
    """T5 v1.1 XXL with random weights built directly in bf16 (meta -> to_empty, filled in chunks: no fp32
    copy, ~9.5 GB), encoding two prompts. Minutes on a 2-core CPU; see the README's memory note."""
    import resource
    with torch.device("meta"):
        model = T5Encoder(T5Config.from_dict(XXL_CONFIG))
    model = model.to(torch.bfloat16).to_empty(device="cpu").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.fill_(1.0)
                continue
            std = 1.0 if p.dim() == 1 or "shared" in name or "relative" in name else p.shape[1] ** -0.5
            for chunk in p.view(p.shape[0], -1).split(1024):
                chunk.normal_(0.0, std)
    input_ids = torch.zeros(2, 77, dtype=torch.long)
    attention_mask = torch.zeros(2, 77, dtype=torch.long)
    input_ids[0, :6] = torch.tensor([3, 9, 1401, 13, 3, 1])   # a short prompt + </s>
    input_ids[1, 0] = 1                                     # "" = just </s>
    attention_mask[0, :6] = 1
    attention_mask[1, 0] = 1
    with torch.inference_mode():
        out = model(input_ids, attention_mask)
    assert out.shape == (2, 77, 4096) and out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB
    assert peak_gb < 13, f"peak RSS {peak_gb:.1f} GB: an fp32 copy was made somewhere"
