"""minidiff.hub on real file layouts made here: local folders and a fake Hub cache (HF_HUB_OFFLINE=1),
fp16 variant / full-precision fallback, sharded T5 with mixed dtypes, casting, and every error message."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import minidiff.hub as hub
from minidiff.hub import LoadError, load_text_encoder, load_tokenizer, load_unet
from minidiff.t5 import T5Config, T5Encoder
from minidiff.unet_if import IFUNet, IFUNetConfig

from test_unet_if import inputs, randomize_

REPO = Path(__file__).parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_T5 = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, model_type="t5",
               feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", relative_attention_num_buckets=32,
               relative_attention_max_distance=128, layer_norm_epsilon=1e-6)



def one_line_with_fix(err: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and ":" in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# --- writing model folders ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_unet(tiny_unet_dicts):
    """(config dict, fp32 state dict) of a random tiny stage II UNet."""
    d = tiny_unet_dicts["II"]
    model = randomize_(IFUNet(IFUNetConfig.from_dict(d)))
    return d, {k: v.contiguous() for k, v in model.state_dict().items()}


def write_unet(folder: Path, config: dict, sd: dict, fp16: bool = True, full: bool = False) -> Path:
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    if fp16:
        save_file({k: v.half() for k, v in sd.items()}, folder / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    if full:
        save_file(sd, folder / "unet" / "diffusion_pytorch_model.safetensors")
    return folder


def tiny_t5_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = T5Encoder(T5Config.from_dict(TINY_T5))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "layer_norm" in name else 0.0, 0.3)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write_t5(folder: Path, sd: dict, variant: str | None = "fp16", sharded: bool = True) -> Path:
    """Like the Hub's text_encoder/: 2 shards + index; the fp16 variant keeps the FFN `wo` weights in fp32,
    and (like transformers' checkpoints) the tied copy encoder.embed_tokens.weight is stored too."""
    sub = folder / "text_encoder"
    sub.mkdir(parents=True, exist_ok=True)
    (sub / "config.json").write_text(json.dumps(TINY_T5))
    sd = dict(sd, **{"encoder.embed_tokens.weight": sd["shared.weight"].clone()})
    if variant == "fp16":
        sd = {k: v if k.endswith("wo.weight") else v.half() for k, v in sd.items()}
    infix = f".{variant}" if variant else ""
    if not sharded:
        save_file(sd, sub / f"model{infix}.safetensors")
        return folder
    keys = sorted(sd)
    shards = {f"model{infix}-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    for name, shard_keys in shards.items():
        save_file({k: sd[k] for k in shard_keys}, sub / name)
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    index = "model.safetensors.index" + (f".{variant}" if variant else "") + ".json"
    (sub / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def write_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The huggingface_hub cache layout: models--Org--Name/{blobs/<id>, snapshots/<commit>/<path> -> blob,
    refs/main = <commit>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for i, src in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{i:040d}"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(src.read_bytes())
        link = repo / "snapshots" / COMMIT / src.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))  # read by huggingface_hub at import time
    return cache


# --- UNet: variants, casting, cache ---------------------------------------------------------------------------


def test_fp16_variant_loads_into_float32_and_computes_like_the_cast_weights(tmp_path, tiny_unet, monkeypatch):
    d, sd = tiny_unet
    monkeypatch.setattr(hub, "READ_CHUNK_BYTES", 10_000)  # reopen the file many times along the way
    model = load_unet(write_unet(tmp_path, d, sd))
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    assert not model.training
    ref = IFUNet(IFUNetConfig.from_dict(d)).eval().requires_grad_(False)    # inference-only, as load_unet's:
    ref.load_state_dict({k: v.half().float() for k, v in sd.items()})      # oneDNN may pick other kernels otherwise
    x_t, text = inputs(ref.config)
    with torch.no_grad():
        torch.testing.assert_close(model(x_t, 3, text, torch.tensor([250, 250])),
                                   ref(x_t, 3, text, torch.tensor([250, 250])), rtol=0, atol=0)


def test_fp16_is_preferred_and_variant_none_reads_full_precision(tmp_path, tiny_unet):
    d, sd = tiny_unet
    write_unet(tmp_path, d, sd, fp16=True, full=True)
    key = "conv_out.weight"
    assert torch.equal(load_unet(tmp_path).state_dict()[key], sd[key].half().float())
    assert torch.equal(load_unet(tmp_path, variant=None).state_dict()[key], sd[key])


def test_falls_back_to_full_precision_when_there_is_no_fp16_file(tmp_path, tiny_unet):
    d, sd = tiny_unet
    model = load_unet(write_unet(tmp_path, d, sd, fp16=False, full=True))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_casts_every_tensor_to_the_requested_dtype(tmp_path, tiny_unet, dtype):
    d, sd = tiny_unet
    model = load_unet(write_unet(tmp_path, d, sd, fp16=False, full=True), dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert torch.equal(model.state_dict()["conv_in.weight"], sd["conv_in.weight"].to(dtype))


def test_loads_from_a_fake_hub_cache_offline_with_revision_pinning(offline_cache, tmp_path, tiny_unet):
    d, sd = tiny_unet
    write_hub_cache(offline_cache, "Org/Tiny-IF-II", write_unet(tmp_path / "repo", d, sd, fp16=False, full=True))
    for revision in (None, COMMIT):  # fp16 is not cached: the full file is the fallback
        model = load_unet("Org/Tiny-IF-II", revision=revision)
        assert torch.equal(model.state_dict()["conv_out.bias"], sd["conv_out.bias"])


def test_fresh_process_offline_cache_and_no_oracle_imports(tmp_path, tiny_unet):
    """One clean interpreter (torch imports are slow): HF_HUB_OFFLINE=1 + HF_HUB_CACHE set for real, every
    minidiff module imported, a UNet loaded from the cache, and neither diffusers nor transformers imported."""
    d, sd = tiny_unet
    cache = tmp_path / "cache"
    write_hub_cache(cache, "Org/Tiny-IF-II", write_unet(tmp_path / "repo", d, sd))
    code = ("import importlib, pkgutil, sys, torch, minidiff\n"
            "names = [m.name for m in pkgutil.iter_modules(minidiff.__path__, 'minidiff.')]\n"
            "[importlib.import_module(n) for n in names]\n"
            "from minidiff.hub import load_unet\n"
            "m = load_unet('Org/Tiny-IF-II', dtype=torch.bfloat16)\n"
            "print(sum(p.numel() for p in m.parameters()), next(m.parameters()).dtype, len(names),\n"
            "      *[o for o in ('diffusers', 'transformers') if o in sys.modules])")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n_params, dtype, n_modules, *oracles = out.stdout.split()
    assert (int(n_params), dtype) == (sum(v.numel() for v in sd.values()), "torch.bfloat16")
    assert int(n_modules) >= 5 and oracles == []


# --- errors ------------------------------------------------------------------------------------------------


def hub_error(cls, message="boom"):
    """An instance of a huggingface_hub error, whatever its constructor wants in this version."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace hf_hub_download: `fake_hub(error)` makes every call raise it; records requested filenames."""
    calls = []

    def install(error):
        def download(repo_id, filename, **kwargs):
            calls.append(filename)
            raise error
        monkeypatch.setattr(hub, "hf_hub_download", download)
        return calls
    return install


@pytest.mark.parametrize("token", [None, "hf_xxx"])
def test_gated_repo_names_the_model_card_and_how_to_log_in(fake_hub, monkeypatch, token):
    fake_hub(hub_error(hub.GatedRepoError))
    monkeypatch.setattr(hub, "get_token", lambda: token)
    with pytest.raises(LoadError) as err:
        load_unet("DeepFloyd/IF-I-XL-v1.0")
    msg = one_line_with_fix(err, "gated", "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0", "accept the license",
                            "hf auth login", "HF_TOKEN")
    assert ("no Hugging Face token" in msg) == (token is None)


@pytest.mark.parametrize("error, words", [
    (hub.RepositoryNotFoundError, ["Org/Nope", "not found", "check the id", "local folder"]),
    (hub.RevisionNotFoundError, ["revision", "not found", "pass an existing"]),
    (hub.EntryNotFoundError, ["has none of", "config.json", "check the repo id"]),
    (hub.LocalEntryNotFoundError, ["offline", "no network", "not in the cache", "run once with network access"]),
    (hub.HfHubHTTPError, ["the Hub failed", "config.json", "retry later"]),
])
def test_hub_errors_are_one_line_and_say_what_to_do(fake_hub, error, words):
    fake_hub(hub_error(error))
    with pytest.raises(LoadError) as err:
        load_unet("Org/Nope")
    one_line_with_fix(err, *words)


def test_is_available_asks_folders_and_the_cache_never_the_network(offline_cache, tmp_path, tiny_unet):
    """The offline query `--backbone auto` makes, with the loaders' folder-or-repo-id rule."""
    d, sd = tiny_unet
    folder = write_unet(tmp_path / "repo", d, sd)
    assert hub.is_available(folder, "unet", ["config.json"])
    assert not hub.is_available(folder, "unet", ["diffusion_pytorch_model.safetensors"])      # only fp16 there
    assert not hub.is_available(tmp_path / "nowhere", "unet", ["config.json"])                 # a path, no folder
    assert not hub.is_available("not a repo id!", "unet", ["config.json"])
    assert not hub.is_available("Org/Tiny-IF-II", "unet", ["config.json"])                      # not downloaded
    write_hub_cache(offline_cache, "Org/Tiny-IF-II", folder)
    assert hub.is_available("Org/Tiny-IF-II", "unet", ["x.json", "config.json"])
    assert hub.is_available("Org/Tiny-IF-II", "unet", ["config.json"], revision=COMMIT)


def test_nothing_cached_offline_for_real(offline_cache):
    with pytest.raises(LoadError) as err:
        load_unet("Org/Never-Downloaded")
    one_line_with_fix(err, "not in the cache", str(offline_cache))


def test_missing_weights_try_fp16_then_full_and_never_a_pickle(fake_hub, monkeypatch, tmp_path, tiny_unet):
    d, _ = tiny_unet
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(d))

    def download(repo_id, filename, subfolder=None, **kwargs):
        calls.append(filename)
        if filename == "config.json":
            return str(tmp_path / "unet" / "config.json")
        raise hub_error(hub.EntryNotFoundError)
    calls = []
    monkeypatch.setattr(hub, "hf_hub_download", download)
    with pytest.raises(LoadError) as err:
        load_unet("Org/Weightless")
    one_line_with_fix(err, "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors")
    assert calls[1:] == ["diffusion_pytorch_model.safetensors.index.fp16.json",
                         "diffusion_pytorch_model.fp16.safetensors",
                         "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors"]


def test_local_folder_errors(tmp_path, tiny_unet):
    d, sd = tiny_unet
    with pytest.raises(LoadError) as err:
        load_unet(tmp_path / "does-not-exist")
    one_line_with_fix(err, "no such folder")
    (tmp_path / "unet").mkdir()
    with pytest.raises(LoadError) as err:
        load_unet(tmp_path)
    one_line_with_fix(err, "config.json", "laid out like the Hub repo")
    (tmp_path / "unet" / "config.json").write_text(json.dumps(d))
    torch.save(sd, tmp_path / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(LoadError) as err:
        load_unet(tmp_path)
    one_line_with_fix(err, "pickled", "never loads .bin", "safetensors")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupted_safetensors(tmp_path, tiny_unet, damage):
    d, sd = tiny_unet
    path = write_unet(tmp_path, d, sd) / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64 + data[64:])
    with pytest.raises(LoadError) as err:
        load_unet(tmp_path)
    one_line_with_fix(err, str(path), "truncated or corrupted", "download it again")


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path, tiny_unet):
    d, sd = tiny_unet
    sd = dict(sd)
    del sd["conv_in.bias"]
    sd["extra.weight"] = torch.zeros(2)
    sd["conv_out.bias"] = torch.zeros(7)
    with pytest.raises(LoadError) as err:
        load_unet(write_unet(tmp_path, d, sd))
    one_line_with_fix(err, "1 missing keys (conv_in.bias)", "1 unexpected keys (extra.weight)",
                      "conv_out.bias (7,) vs (6,)", "same model and revision")


def test_unsupported_config_option_and_bad_dtype(tmp_path, tiny_unet):
    d, sd = tiny_unet
    write_unet(tmp_path, dict(d, resnet_time_scale_shift="default"), sd)
    with pytest.raises(ValueError) as err:
        load_unet(tmp_path)
    one_line_with_fix(err, "resnet_time_scale_shift")
    write_unet(tmp_path, d, sd)
    with pytest.raises(ValueError, match="floating torch.dtype"):
        load_unet(tmp_path, dtype=torch.int64)


@pytest.mark.parametrize("config, words", [
    ([1, 2, 3], "holds a JSON list, not an object of options"),
    ({"sample_size": "64"}, "sample_size = '64' is not of type"),
    ({"block_out_channels": 320}, "wrongly typed option"),
    ({"block_out_channels": [32, 32, "64"]}, "block_out_channels = [32, 32, '64'] is not of type"),
    ({"layers_per_block": 2.5}, "layers_per_block"),
    ({"norm_eps": True}, "norm_eps = True is not of type"),
    ({"in_channels": None}, "in_channels = None is not of type"),
])
def test_a_wrongly_typed_unet_config_is_one_line(tmp_path, tiny_unet, config, words):
    """A config.json that is not an object, or whose fields have the wrong JSON types: one line naming the file, before
    any module is built (not a TypeError deep in nn.Conv2d)."""
    d, sd = tiny_unet
    write_unet(tmp_path, d, sd)
    path = tmp_path / "unet" / "config.json"
    path.write_text(json.dumps(config if isinstance(config, list) else {**d, **config}))
    with pytest.raises(LoadError) as err:
        load_unet(tmp_path)
    one_line_with_fix(err, str(path), words, "download it again")


# --- T5 text encoder and tokenizer ------------------------------------------------------------------------------


def t5_reference(sd: dict, dtype: torch.dtype, variant: str | None) -> T5Encoder:
    """What the loader should produce: the stored values (fp16 except wo in the fp16 variant) cast to dtype."""
    stored = {k: v if (variant is None or k.endswith("wo.weight")) else v.half() for k, v in sd.items()}
    model = T5Encoder(T5Config.from_dict(TINY_T5)).eval()
    model.load_state_dict({k: v.to(dtype) for k, v in stored.items()})
    return model.to(dtype)


@pytest.mark.parametrize("variant, sharded, dtype", [
    ("fp16", True, torch.float32), ("fp16", True, torch.bfloat16), (None, True, torch.float32),
    ("fp16", False, torch.float32), (None, False, torch.bfloat16),
])
def test_text_encoder_shards_variants_and_mixed_dtypes(tmp_path, variant, sharded, dtype):
    sd = tiny_t5_state()
    enc = load_text_encoder(write_t5(tmp_path, sd, variant, sharded), dtype=dtype)
    assert {p.dtype for p in enc.parameters()} == {dtype}
    ids = torch.randint(2, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(enc(ids, mask), t5_reference(sd, dtype, variant)(ids, mask), rtol=0, atol=0)


def test_text_encoder_falls_back_to_full_precision_shards(tmp_path):
    sd = tiny_t5_state()
    enc = load_text_encoder(write_t5(tmp_path, sd, variant=None), variant="fp16")
    key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(enc.state_dict()[key], sd[key])


def test_text_encoder_reads_embed_tokens_as_shared_when_shared_is_absent(tmp_path):
    sd = tiny_t5_state()
    sub = tmp_path / "text_encoder"
    sub.mkdir()
    (sub / "config.json").write_text(json.dumps(TINY_T5))
    renamed = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in sd.items()}
    save_file(renamed, sub / "model.safetensors")
    enc = load_text_encoder(tmp_path)
    assert torch.equal(enc.shared.weight, sd["shared.weight"])


def test_text_encoder_in_float16_keeps_wo_in_float32_and_survives_outliers(tmp_path, monkeypatch):
    """T5 XXL's feed-forward outputs overflow float16. A tiny T5 with that outlier injected (block 0's `wo` scaled
    up so its output passes 65504): all-float16 is wrong (inf clamped, or NaN without the clamp); the float16 path
    (wo read and run in float32, the residual stream promoted after it, inf clamped) stays within float16 rounding
    of float32. Measured relative errors: 2.3e-3 (this path), 0.37 (all-float16)."""
    from minidiff import t5
    sd = tiny_t5_state()
    sd["encoder.block.0.layer.1.DenseReluDense.wo.weight"] *= 2e4
    write_t5(tmp_path, sd)                                           # the fp16 variant, wo stored in float32
    ids = torch.randint(3, 64, (2, 77), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(77) < torch.tensor([[20], [77]])).long()
    with torch.no_grad():
        ref = load_text_encoder(tmp_path, dtype=torch.float32)
        residual = ref.encoder.block[0](ref.shared(ids), ref.encoder.block[0].layer[0].SelfAttention.position_bias(
            77, "cpu"))
        assert residual.abs().max() > torch.finfo(torch.float16).max          # the outlier overflows float16
        expected = ref(ids, mask)
        fp16 = load_text_encoder(tmp_path, dtype=torch.float16)
        assert {p.dtype for n, p in fp16.named_parameters() if n.endswith(".wo.weight")} == {torch.float32}
        assert fp16.shared.weight.dtype == torch.float16
        out = fp16(ids, mask)                                                  # (2, 77, 32)
        naive_model = ref.half()                                               # every weight in float16
        naive = naive_model(ids, mask)
        monkeypatch.setattr(t5, "clamp_inf_fp16", lambda x: x)
        unguarded = naive_model(ids, mask)                                     # ... and no clamp either
    error = lambda y: float((y.float() - expected).norm() / expected.norm())
    assert torch.isfinite(out).all() and out.dtype == torch.float16 and error(out) < 5e-3
    assert not error(naive) < 0.1 and not torch.isfinite(unguarded).all()


def test_text_encoder_index_naming_a_missing_shard(tmp_path):
    write_t5(tmp_path, tiny_t5_state())
    (tmp_path / "text_encoder" / "model.fp16-00002-of-00002.safetensors").unlink()
    with pytest.raises(LoadError) as err:
        load_text_encoder(tmp_path)
    one_line_with_fix(err, "model.fp16-00002-of-00002.safetensors")


def test_tokenizer_reads_spiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    words = "a photo of a dog an oil painting of a snowy mountain village the rocket ship a man wearing a hat".split()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([" ".join(words[i:] + words[:i]) for i in range(len(words))]),
                                   model_writer=model, vocab_size=60, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "spiece.model").write_bytes(model.getvalue())
    tok = load_tokenizer(tmp_path)
    input_ids, attention_mask = tok(["a photo of a dog"])
    assert input_ids.shape == attention_mask.shape == (1, 77) and input_ids.dtype == torch.int64
    n = int(attention_mask.sum())
    assert input_ids[0, n - 1] == 1 and (input_ids[0, n:] == 0).all()
    with pytest.raises(LoadError) as err:
        load_tokenizer(tmp_path / "tokenizer")
    one_line_with_fix(err, "spiece.model")
