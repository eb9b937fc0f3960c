"""minidiff.deepfloyd on tiny random IF cascades written as local Hub-layout folders (no Hub, CPU, seconds):
stage I split into eps/v, CFG through the backbone, stage II as an independent one-step recomputation,
one network in memory at a time, the prompt cache, the offline availability probe, the pipeline timesteps.

`write_if_folders` (also used by test_stages_deepfloyd.py) writes
    <root>/IF-I/{unet, text_encoder, tokenizer, scheduler}/...   a tiny stage I (20 px) with T5 + sentencepiece
    <root>/IF-II/{unet, scheduler, image_noising_scheduler}/...  a tiny stage II (40 px)
from the real IF-I-XL / IF-II-L configs with only widths and depths shrunk."""
import gc
import io
import json
import math
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from minidiff import deepfloyd, guidance, hub
from minidiff import prompts as P
from minidiff.t5 import T5Config, T5Encoder
from minidiff.unet_if import IFUNet, IFUNetConfig

from test_unet_if import randomize_

spm = pytest.importorskip("sentencepiece")

FIXTURES = Path(__file__).parent / "fixtures" / "deepfloyd"
TEXT_DIM = 32
TINY_T5 = dict(vocab_size=96, d_model=TEXT_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
               relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6)
CORPUS = list(P.REPORT_PROMPTS) * 5
STAGE1 = dict(block_out_channels=[32, 32, 64], layers_per_block=1, attention_head_dim=16, cross_attention_dim=64,
              encoder_hid_dim=TEXT_DIM, addition_embed_type_num_heads=4, sample_size=20,
              down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"],
              up_block_types=["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"])
STAGE2 = dict(block_out_channels=[32, 32, 64], layers_per_block=[1, 1, 1], attention_head_dim=16,
              cross_attention_dim=64, encoder_hid_dim=TEXT_DIM, time_embedding_dim=64, addition_embed_type_num_heads=4,
              sample_size=40,
              down_block_types=["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
              up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"])


def _config(name: str, **shapes) -> dict:
    return dict(json.loads((FIXTURES / f"{name}.unet.config.json").read_text()), **shapes)


def _write_unet(folder: Path, config: dict, seed: int) -> None:
    model = randomize_(IFUNet(IFUNetConfig.from_dict(config)), seed)
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
              str(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"))


def _write_scheduler(folder: Path, sub: str, name: str) -> None:
    (folder / sub).mkdir(parents=True)
    (folder / sub / "scheduler_config.json").write_text((FIXTURES / f"{name}.scheduler_config.json").read_text())


def write_if_folders(root: Path) -> tuple[Path, Path]:
    """(stage I folder, stage II folder), laid out like DeepFloyd/IF-I-XL-v1.0 and DeepFloyd/IF-II-L-v1.0."""
    one, two = root / "IF-I", root / "IF-II"
    _write_unet(one, _config("IF-I-XL-v1.0", **STAGE1), seed=0)
    _write_scheduler(one, "scheduler", "IF-I-XL-v1.0")
    (one / "text_encoder").mkdir()
    t5_config = json.loads((FIXTURES / "IF-I-XL-v1.0.text_encoder.config.json").read_text())
    (one / "text_encoder" / "config.json").write_text(json.dumps(dict(t5_config, **TINY_T5)))
    torch.manual_seed(0)
    t5 = T5Encoder(T5Config(**TINY_T5))
    save_file({k: v.contiguous() for k, v in t5.state_dict().items()}, str(one / "text_encoder" / "model.safetensors"))
    (one / "tokenizer").mkdir()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=TINY_T5["vocab_size"],
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    (one / "tokenizer" / "spiece.model").write_bytes(buf.getvalue())
    _write_unet(two, _config("IF-II-L-v1.0", **STAGE2), seed=1)
    _write_scheduler(two, "scheduler", "IF-II-L-v1.0")
    _write_scheduler(two, "image_noising_scheduler", "IF-II-L-v1.0")
    return one, two



@pytest.fixture(autouse=True)
def small_device(monkeypatch):
    """A made-up 1 MB device: minidiff.memory's plan loads one network at a time, as on a 16 GB GPU with IF-I-XL
    (test_memory_plan... below set other sizes)."""
    from minidiff import memory
    monkeypatch.setattr(memory, "device_bytes", lambda device: 10**6)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_if_folders(tmp_path_factory.mktemp("deepfloyd"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "prompt_embeds.safetensors"
    monkeypatch.setenv(P.CACHE_ENV, str(path))
    return path


@pytest.fixture
def backbone(folders, cache):
    one, two = folders
    return deepfloyd.DeepFloydBackbone.from_pretrained(one, two, device="cpu", dtype=torch.float32,
                                                       t5_dtype=torch.float32)


@pytest.fixture
def live_unets(monkeypatch):
    """Every IFUNet hub.load_unet makes, weakly referenced; asserts none is alive when the next one (or T5)
    is loaded."""
    live, loads = weakref.WeakSet(), []
    real_unet, real_t5 = hub.load_unet, hub.load_text_encoder

    def load_unet(*args, **kwargs):
        gc.collect()
        assert len(live) == 0, "a UNet is still in memory while another one is loaded"
        unet = real_unet(*args, **kwargs)
        live.add(unet)
        loads.append(unet.config.class_embed_type == "timestep" and "II" or "I")
        return unet

    def load_text_encoder(*args, **kwargs):
        gc.collect()
        assert len(live) == 0, "a UNet is still in memory while T5 is loaded"
        loads.append("T5")
        return real_t5(*args, **kwargs)

    monkeypatch.setattr(hub, "load_unet", load_unet)
    monkeypatch.setattr(hub, "load_text_encoder", load_text_encoder)
    return live, loads


# --- the interface ------------------------------------------------------------------------------------------


def test_attributes_come_from_the_configs(backbone):
    from minidiff.backbone import Backbone
    assert isinstance(backbone, Backbone) and backbone.name == "deepfloyd"
    assert backbone.image_shape == (3, 20, 20)                     # stage I's sample_size, not a hard-coded 64
    assert backbone.timesteps == list(range(990, -1, -30)) and len(backbone.timesteps) == 34
    assert not hasattr(backbone, "threshold")              # Part 0 passes its own; no backbone default
    torch.testing.assert_close(backbone.schedule.alpha_bar, deepfloyd.NoiseSchedule.cosine(1000).alpha_bar)


def test_model_fn_splits_eps_and_v_like_the_unet(backbone):
    g = torch.Generator().manual_seed(0)
    x_t, cond = torch.randn(2, 3, 20, 20, generator=g), backbone.embed(["a rocket ship", ""])
    eps_hat, v_hat = backbone.model_fn(x_t, 510, cond)
    with torch.no_grad():
        out = backbone.stage1()(x_t, 510, cond)                                  # (2, 6, 20, 20)
    assert eps_hat.shape == v_hat.shape == (2, 3, 20, 20)
    torch.testing.assert_close(eps_hat, out[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(v_hat, out[:, 3:], rtol=0, atol=0)


def test_half_precision_unet_casts_inside(folders, cache):
    one, two = folders
    bb = deepfloyd.DeepFloydBackbone.from_pretrained(one, two, dtype=torch.bfloat16, t5_dtype=torch.float32)
    x_t, cond = torch.randn(1, 3, 20, 20), bb.embed(["a pencil"])
    eps_hat, v_hat = bb.model_fn(x_t, 300, cond)
    assert eps_hat.dtype == v_hat.dtype == torch.float32
    with torch.no_grad():
        out = bb.stage1()(x_t.bfloat16(), 300, cond.bfloat16()).float()
    torch.testing.assert_close(eps_hat, out[:, :3], rtol=0, atol=0)


def test_cfg_through_the_backbone_is_the_formula(backbone):
    """[A.4] eps_u + gamma (eps_c - eps_u), from two separate UNet calls; v_hat from the conditional branch."""
    x_t = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    cond, uncond, gamma = backbone.embed(["a photo of a dog", "a pencil"]), backbone.embed([""]), 7.0
    eps_hat, v_hat = guidance.cfg(backbone.model_fn, cond, uncond, gamma)(x_t, 690)
    with torch.no_grad():
        c = backbone.stage1()(x_t, 690, cond)
        u = backbone.stage1()(x_t, 690, uncond.expand(2, -1, -1))
    torch.testing.assert_close(eps_hat, u[:, :3] + gamma * (c[:, :3] - u[:, :3]), rtol=1e-4, atol=3e-4)
    torch.testing.assert_close(v_hat, c[:, 3:], rtol=1e-5, atol=1e-5)


def test_images_are_in_the_model_range(backbone, tmp_path):
    named = backbone.test_images()
    assert [n for n, _ in named] == ["rocket", "astronaut", "chelsea"]
    for _, x in named:
        assert x.shape == (1, 3, 20, 20) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    torch.testing.assert_close(backbone.to_unit(named[0][1]), (named[0][1] + 1) / 2)
    with pytest.raises(ValueError, match="cannot read"):
        (tmp_path / "not.png").write_text("not an image")
        backbone.load_image(tmp_path / "not.png")


# --- stage II -----------------------------------------------------------------------------------------------


def test_upsample_shape_range_and_determinism(backbone):
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    prompts = ["a rocket ship", "a man wearing a hat"]
    y = backbone.upsample(x, prompts, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 3, 40, 40) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and -1 <= y.min() and y.max() <= 1
    y2 = backbone.upsample(x, prompts, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, y2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one prompt per image"):
        backbone.upsample(x, prompts[:1])


def test_one_step_upsample_is_the_recomputed_x0_estimate(backbone):
    """With num_inference_steps = 1 the pipeline runs the model once at t = 0 and lands on x0_hat [A.3]:
    recompute it by hand: the low-res image upsampled (bilinear, align_corners) and noised to 250 [A.1],
    concatenated to x_T, CFG gamma = 4 [A.4], x0_hat = (x_T - sqrt(1 - abar_0) eps) / sqrt(abar_0), clipped."""
    x = torch.rand(1, 3, 20, 20) * 2 - 1
    cond, uncond = backbone.embed(["a pencil"]), backbone.embed([""])
    y = backbone.upsample(x, ["a pencil"], num_inference_steps=1, generator=torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)
    up = F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=True)
    a250, a0 = float(backbone.schedule.alpha_bar[250]), float(backbone.schedule.alpha_bar[0])
    x_T = torch.randn(1, 3, 40, 40, generator=g)                    # the pipeline's order: x_T, then low_res's noise
    low_res = math.sqrt(a250) * up + math.sqrt(1 - a250) * torch.randn(up.shape, generator=g)
    unet = hub.load_unet(backbone.stage2_source)
    with torch.no_grad():
        e_c = unet(torch.cat([x_T, low_res], 1), 0, cond, torch.tensor([250]))[:, :3]
        e_u = unet(torch.cat([x_T, low_res], 1), 0, uncond, torch.tensor([250]))[:, :3]
    eps = e_u + 4.0 * (e_c - e_u)
    x0_hat = ((x_T - math.sqrt(1 - a0) * eps) / math.sqrt(a0)).clamp(-1, 1)
    torch.testing.assert_close(y, x0_hat, rtol=1e-4, atol=1e-4)


def test_an_illusion_keeps_its_guidance_through_stage_ii(backbone):
    """Stage II of an anagram (Geng et al.'s code: both prompts, the same views, noise level 50), one step: the
    upsample lands on x0_hat of the COMBINED estimate, each view applied to cat(x_T, conditioning image) and
    inverted on its eps: eps = (CFG_a(z) + flip(CFG_b(flip(z)))) / 2, z = cat(x_T, noised upsampled x) [A.4, §1.8].
    A hybrid's near prompt likewise stays in the high frequencies at 256 px (the same guide, guidance.hybrid)."""
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a, b, u = backbone.embed(["a pencil"]), backbone.embed(["a rocket ship"]), backbone.embed([""])
    guides = {
        "anagram": lambda model_fn, S: guidance.anagram(model_fn, [a, b], [guidance.identity(),
                                                                            guidance.view("flip", S)], u, 4.0),
        "hybrid": lambda model_fn, S: guidance.hybrid(model_fn, a, b, u, 4.0, kernel_size=9, sigma=1.0)}
    ys = {name: backbone.upsample(x, ["a pencil"], num_inference_steps=1, generator=torch.Generator().manual_seed(3),
                                  guide=guide, noise_level=50) for name, guide in guides.items()}

    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(1, 3, 40, 40, generator=g)
    up = F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=True)
    a50, a0 = float(backbone.schedule.alpha_bar[50]), float(backbone.schedule.alpha_bar[0])
    z = torch.cat([x_T, math.sqrt(a50) * up + math.sqrt(1 - a50) * torch.randn(up.shape, generator=g)], 1)
    unet = hub.load_unet(backbone.stage2_source)
    def cfg(z, c):
        with torch.no_grad():
            e_c, e_u = (unet(z, 0, cond, torch.tensor([50]))[:, :3] for cond in (c, u))
        return e_u + 4.0 * (e_c - e_u)
    expected = {"anagram": (cfg(z, a) + cfg(z.flip(-2), b).flip(-2)) / 2,
                "hybrid": guidance.gaussian_blur(cfg(z, a), 9, 1.0) + guidance.highpass(cfg(z, b), 9, 1.0)}
    for name, eps in expected.items():
        x0_hat = ((x_T - math.sqrt(1 - a0) * eps) / math.sqrt(a0)).clamp(-1, 1)
        torch.testing.assert_close(ys[name], x0_hat, rtol=1e-4, atol=1e-4)
    plain = backbone.upsample(x, ["a pencil"], num_inference_steps=1, generator=torch.Generator().manual_seed(3),
                              noise_level=50)                                    # CFG on the first prompt alone
    # the tiny random UNet barely reads its prompt (measured mean difference 3e-3), still 30x the tolerance above
    assert all((plain - y).abs().mean() > 1e-3 for y in ys.values())


def test_one_network_in_memory_at_a_time(folders, cache, live_unets):
    live, loads = live_unets
    one, two = folders
    bb = deepfloyd.DeepFloydBackbone.from_pretrained(one, two, t5_dtype=torch.float32)
    assert loads == ["I"]
    cond = bb.embed(["a rocket ship"])                 # not cached: stage I is freed, then T5 runs
    x = torch.randn(1, 3, 20, 20)
    bb.model_fn(x, 990, cond)                          # stage I is loaded again
    bb.upsample(x, ["a rocket ship"], num_inference_steps=2)   # "" is new: T5; then stage II; then freed
    bb.model_fn(x, 990, cond)
    assert loads == ["I", "T5", "I", "T5", "II", "I"]
    gc.collect()
    assert len(live) == 1


def test_both_unets_stay_when_asked(folders, cache, monkeypatch):
    one, two = folders
    P.encode_prompts(["a rocket ship", ""], str(one), dtype=torch.float32)      # all cached: T5 is not needed
    loads, real = [], hub.load_unet
    def load_unet(source, *args, **kwargs):
        loads.append(Path(source).name)
        return real(source, *args, **kwargs)
    monkeypatch.setattr(hub, "load_unet", load_unet)
    bb = deepfloyd.DeepFloydBackbone.from_pretrained(one, two, one_unet_at_a_time=False)
    x = torch.randn(1, 3, 20, 20)
    bb.upsample(x, ["a rocket ship"], num_inference_steps=2)
    bb.model_fn(x, 990, bb.embed(["a rocket ship"]))
    bb.upsample(x, ["a rocket ship"], num_inference_steps=2)
    assert loads == ["IF-I", "IF-II"]


def test_a_large_device_keeps_both_unets_and_t5(folders, cache, monkeypatch):
    """On a made-up device with room for everything the plan keeps both UNets, and T5 is loaded beside them."""
    from minidiff import memory
    monkeypatch.setattr(memory, "device_bytes", lambda device: 10**12)
    one, two = folders
    loads = []
    monkeypatch.setattr(hub, "load_unet", lambda *a, **k: loads.append("UNet") or real_unet(*a, **k))
    monkeypatch.setattr(hub, "load_text_encoder", lambda *a, **k: loads.append(f"T5 beside {len(kept)}") or
                        real_t5(*a, **k))
    bb = deepfloyd.DeepFloydBackbone.from_pretrained(one, two, t5_dtype=torch.float32)
    kept = bb._unets
    x = torch.randn(1, 3, 20, 20)
    bb.upsample(x, ["a rocket ship"], num_inference_steps=2)                        # T5 for two new prompts
    bb.model_fn(x, 990, bb.embed(["a pencil"]))
    assert loads == ["UNet", "T5 beside 1", "UNet", "T5 beside 2"] and set(bb._unets) == {"I", "II"}
    assert bb.memory_note.startswith("memory plan: keeps both UNets and T5 on the device")


real_unet, real_t5 = hub.load_unet, hub.load_text_encoder


@pytest.mark.parametrize("gb, keep, beside, words", [
    (12, False, False, "loads one network at a time"), (16, False, False, "loads one network at a time"),
    (24, True, False, "keeps both UNets on the device (11.1 GB of 24.0 GB); frees them before T5"),
    (40, True, True, "keeps both UNets and T5"), (80, True, True, "keeps both UNets and T5")])
def test_memory_plan_for_the_readme_table(gb, keep, beside, words):
    """IF-I-XL + IF-II-L in fp16 (8.6 + 2.5 GB) and T5 XXL in bf16 (9.5 GB), the README's table."""
    from minidiff import memory
    plan = memory.memory_plan(gb * 10**9, (8.6e9, 2.5e9), 9.5e9)
    assert (plan.keep_unets, plan.t5_beside_unets) == (keep, beside) and words in plan.note and "\n" not in plan.note
    assert ("may not fit" in plan.note) == (gb < 11)                          # T5 alone needs 9.5 / 0.9 GB
    tiny = memory.memory_plan(8 * 10**9, (0.8e9, 0.9e9), 9.5e9)              # IF-I-M + IF-II-M on 8 GB
    assert tiny.keep_unets and not tiny.t5_beside_unets and "may not fit" in tiny.note


# --- prompts ------------------------------------------------------------------------------------------------


def test_embed_reads_the_cache_and_loads_t5_once(backbone, cache, live_unets):
    _, loads = live_unets
    first = backbone.embed(["A Rocket Ship ", ""])
    assert first.shape == (2, 77, TEXT_DIM) and first.dtype == torch.float32 and cache.is_file()
    second = backbone.embed(["", "a rocket ship"])
    assert loads.count("T5") == 1
    torch.testing.assert_close(second, first[[1, 0]], rtol=0, atol=0)
    keys = P.read_cache(cache)
    assert P.cache_key("a rocket ship", backbone.source) in keys


def test_missing_prompt_without_t5_is_one_line(folders, tmp_path, monkeypatch):
    one, two = folders
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path / "empty.safetensors"))
    bb = deepfloyd.DeepFloydBackbone.from_pretrained(one, two)

    def unreachable(*args, **kwargs):
        raise hub.LoadError("DeepFloyd/IF-I-XL-v1.0 is gated and no Hugging Face token was found: log in")
    monkeypatch.setattr(hub, "load_text_encoder", unreachable)
    with pytest.raises(P.PromptCacheError) as err:
        bb.embed(["a photo of a dog"])
    assert "\n" not in str(err.value) and "python -m minidiff.prompts" in str(err.value)


def test_wrong_stage_is_refused_in_one_line(folders, cache):
    one, two = folders
    with pytest.raises(ValueError, match="stage II UNet where a stage I") as err:
        deepfloyd.DeepFloydBackbone.from_pretrained(two, one)
    assert "\n" not in str(err.value)


# --- availability probe and timesteps -----------------------------------------------------------------------


def test_unavailable_reason_on_folders(folders, cache, tmp_path):
    one, two = folders
    assert deepfloyd.unavailable_reason(one, two, cache_path=cache) is None          # T5 is there
    reason = deepfloyd.unavailable_reason(tmp_path / "nowhere", two, cache_path=cache)
    assert reason.startswith("stage I weights") and "\n" not in reason
    bare = tmp_path / "bare"                                                          # stage I without T5
    (bare / "unet").mkdir(parents=True)
    for f in (one / "unet").iterdir():
        (bare / "unet" / f.name).write_bytes(f.read_bytes())
    assert "not cached and T5 is not downloaded" in deepfloyd.unavailable_reason(bare, two, cache_path=cache)
    P.write_cache(cache, {P.cache_key(p, str(bare)): torch.zeros(77, TEXT_DIM) for p in P.REPORT_PROMPTS})
    assert deepfloyd.unavailable_reason(bare, two, cache_path=cache) is None          # every prompt cached


def test_unavailable_reason_reads_the_hub_cache_offline(folders, cache, tmp_path, monkeypatch):
    from test_hub import write_hub_cache
    one, two = folders
    hub_cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(hub_cache))
    assert "not downloaded" in deepfloyd.unavailable_reason("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0",
                                                             cache_path=cache)
    write_hub_cache(hub_cache, "DeepFloyd/IF-I-XL-v1.0", one)
    write_hub_cache(hub_cache, "DeepFloyd/IF-II-L-v1.0", two)
    assert deepfloyd.unavailable_reason("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0", cache_path=cache) is None
    bb = deepfloyd.DeepFloydBackbone.from_pretrained("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0")
    assert bb.image_shape == (3, 20, 20)


def test_every_if_stage1_repo_shares_one_t5_and_one_cache_entry(folders, cache, tmp_path, monkeypatch):
    """IF-I-L (here without a text_encoder/ of its own, as if never downloaded) reads T5 from IF-I-XL and keys the
    cache by it: a prompt encoded for one size is cached for every size, and T5 runs once."""
    from test_hub import write_hub_cache
    one, two = folders
    hub_cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(hub_cache))
    unet_only = tmp_path / "IF-I-L"
    (unet_only / "unet").mkdir(parents=True)
    for f in (one / "unet").iterdir():
        (unet_only / "unet" / f.name).write_bytes(f.read_bytes())
    write_hub_cache(hub_cache, "DeepFloyd/IF-I-L-v1.0", unet_only)
    write_hub_cache(hub_cache, "DeepFloyd/IF-I-XL-v1.0", one)
    write_hub_cache(hub_cache, "DeepFloyd/IF-II-L-v1.0", two)
    assert P.text_encoder_of("DeepFloyd/IF-I-L-v1.0", revision="v1") == ("DeepFloyd/IF-I-XL-v1.0", None)
    assert P.text_encoder_of(str(one)) == (str(one), None)                     # a folder brings its own
    t5_loads = []
    real = hub.load_text_encoder
    monkeypatch.setattr(hub, "load_text_encoder", lambda *a, **k: t5_loads.append(a[0]) or real(*a, **k))
    large = deepfloyd.DeepFloydBackbone.from_pretrained("DeepFloyd/IF-I-L-v1.0", "DeepFloyd/IF-II-L-v1.0",
                                                        t5_dtype=torch.float32)
    e_large = large.embed(["a lithograph of a skull"])
    assert t5_loads == ["DeepFloyd/IF-I-XL-v1.0"]
    assert list(P.read_cache(cache)) == [P.cache_key("a lithograph of a skull", "DeepFloyd/IF-I-XL-v1.0")]
    xl = deepfloyd.DeepFloydBackbone.from_pretrained("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0")
    assert torch.equal(xl.embed(["a lithograph of a skull"]), e_large) and len(t5_loads) == 1   # cached: no T5
    assert deepfloyd.unavailable_reason("DeepFloyd/IF-I-L-v1.0", "DeepFloyd/IF-II-L-v1.0", cache_path=cache,
                                        needed_prompts=["a lithograph of a skull"]) is None


@pytest.mark.parametrize("n", [1, 5, 10, 20, 50])
def test_pipeline_timesteps_match_diffusers(n):
    assert deepfloyd.pipeline_timesteps(n)[-1] == -1
    diffusers = pytest.importorskip("diffusers")
    config = json.loads((FIXTURES / "IF-I-XL-v1.0.scheduler_config.json").read_text())
    sched = diffusers.DDPMScheduler.from_config(config)
    sched.set_timesteps(n)
    assert deepfloyd.pipeline_timesteps(n)[:-1] == sched.timesteps.tolist()
