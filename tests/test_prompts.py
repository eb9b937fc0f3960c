"""The prompt-embedding cache: only new prompts reach T5, keys are (source, revision, preprocessed prompt),
all-cached calls never load T5, corrupted files are detected, writes are atomic, failures are one line.

T5 here is a tiny random v1.1 encoder + a sentencepiece model trained in the test, written as a local
Hub-layout folder (text_encoder/config.json + model.safetensors, tokenizer/spiece.model) and read back by
minidiff.hub's loaders."""
import io
import json
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from minidiff import prompts as P
from minidiff.t5 import T5Config, T5Encoder, T5Tokenizer

spm = pytest.importorskip("sentencepiece")
hub = pytest.importorskip("minidiff.hub")

TINY = dict(vocab_size=80, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4,
            relative_attention_num_buckets=32, relative_attention_max_distance=16, layer_norm_epsilon=1e-6)
CORPUS = ["a photo of a dog", "a rocket ship", "a pencil", "a man wearing a hat", "an oil painting",
          "a lithograph of a waterfall", "a high quality photo"] * 10


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    """A local folder laid out like the IF-I-XL-v1.0 Hub repo, with a tiny T5 and tokenizer."""
    root = tmp_path_factory.mktemp("IF-tiny")
    (root / "text_encoder").mkdir()
    (root / "tokenizer").mkdir()
    config = dict(json.loads((Path(__file__).parent / "fixtures/deepfloyd/IF-I-XL-v1.0.text_encoder.config.json")
                             .read_text()), **TINY)
    (root / "text_encoder" / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = T5Encoder(T5Config(**TINY))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(root / "text_encoder" / "model.safetensors"))
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=TINY["vocab_size"],
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    (root / "tokenizer" / "spiece.model").write_bytes(buf.getvalue())
    return root


@pytest.fixture
def counting(monkeypatch):
    """Count T5 loads and the prompts that go through the encoder's forward."""
    calls = {"loads": 0, "prompts": 0}
    real_load = hub.load_text_encoder

    def load_text_encoder(*args, **kwargs):
        calls["loads"] += 1
        encoder = real_load(*args, **kwargs)
        forward = encoder.forward

        def counted_forward(input_ids, attention_mask=None):
            calls["prompts"] += input_ids.shape[0]
            return forward(input_ids, attention_mask)

        encoder.forward = counted_forward
        return encoder

    monkeypatch.setattr(hub, "load_text_encoder", load_text_encoder)
    return calls


def reference_embeds(hub_folder, prompts):
    """Independent recomputation: our T5 on the folder's weights, fp32, prompts preprocessed by hand."""
    from safetensors.torch import load_file
    model = T5Encoder(T5Config(**TINY))
    model.load_state_dict(load_file(str(hub_folder / "text_encoder" / "model.safetensors")), strict=True)
    ids, mask = T5Tokenizer(hub_folder / "tokenizer" / "spiece.model")([p.lower().strip() for p in prompts])
    with torch.no_grad():
        return model(ids, mask)


def test_report_prompts():
    assert len(P.REPORT_PROMPTS) == len(set(P.REPORT_PROMPTS)) == 18
    assert "" in P.REPORT_PROMPTS and "a photo of the amalfi cost" in P.REPORT_PROMPTS


def test_default_cache_path(monkeypatch, tmp_path):
    monkeypatch.delenv(P.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert P.default_cache_path() == tmp_path / "minidiff" / "prompt_embeds.safetensors"
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path / "mine.safetensors"))
    assert P.default_cache_path() == tmp_path / "mine.safetensors"


def test_encodes_only_new_prompts(hub_folder, tmp_path, counting):
    cache = tmp_path / "embeds.safetensors"
    prompts = ["A Photo of a Dog ", "a photo of a dog", "", "a rocket ship"]
    out = P.encode_prompts(prompts, str(hub_folder), cache_path=cache, dtype=torch.float32, batch_size=2)
    assert counting == {"loads": 1, "prompts": 3}  # the first two are one prompt after preprocessing
    assert out.shape == (4, 77, TINY["d_model"]) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference_embeds(hub_folder, prompts), atol=1e-5, rtol=1e-5)

    out2 = P.encode_prompts(["a pencil", "a rocket ship", ""], str(hub_folder), cache_path=cache,
                            dtype=torch.float32)
    assert counting == {"loads": 2, "prompts": 4}  # only "a pencil" was new
    torch.testing.assert_close(out2[1:], out[[3, 2]])
    torch.testing.assert_close(out2[:1], reference_embeds(hub_folder, ["a pencil"]), atol=1e-5, rtol=1e-5)


def test_bf16_encoder_within_tolerance(hub_folder, tmp_path):
    out = P.encode_prompts(["a photo of a dog", ""], str(hub_folder), cache_path=tmp_path / "c.safetensors")
    assert out.dtype == torch.float32  # stored in float32 whatever T5 ran in
    assert (out - reference_embeds(hub_folder, ["a photo of a dog", ""])).abs().max() < 0.1


def test_all_cached_never_loads_t5(hub_folder, tmp_path, monkeypatch):
    cache = tmp_path / "embeds.safetensors"
    expected = P.encode_prompts(["a pencil", ""], str(hub_folder), cache_path=cache, dtype=torch.float32)
    def refuse(*args, **kwargs):
        raise AssertionError("T5 must not be loaded")
    monkeypatch.setattr(hub, "load_text_encoder", refuse)
    monkeypatch.setattr(hub, "load_tokenizer", refuse)
    got = P.encode_prompts(["", " A Pencil", "a pencil"], str(hub_folder), cache_path=cache)
    torch.testing.assert_close(got, expected[[1, 0, 0]], atol=0, rtol=0)
    assert P.missing_prompts(["a pencil", "a dog"], str(hub_folder), cache_path=cache) == ["a dog"]


def test_cache_keyed_by_source_revision_and_preprocessed_prompt(hub_folder, tmp_path, counting):
    cache = tmp_path / "embeds.safetensors"
    P.encode_prompts(["A Rocket Ship"], str(hub_folder), cache_path=cache, dtype=torch.float32)
    P.encode_prompts(["a rocket ship"], str(hub_folder), revision="v2", cache_path=cache, dtype=torch.float32)
    assert counting["prompts"] == 2  # another revision is another encoder
    keys = sorted(json.loads(k) for k in P.read_cache(cache))
    root = str(hub_folder.resolve())
    assert keys == [[root, "main", "a rocket ship"], [root, "v2", "a rocket ship"]]
    assert P.cache_key("a rocket ship", "DeepFloyd/IF-I-XL-v1.0") == '["DeepFloyd/IF-I-XL-v1.0", "main", "a rocket ship"]'


def test_cache_file_format(tmp_path):
    cache = tmp_path / "sub" / "embeds.safetensors"
    entries = {P.cache_key("a dog"): torch.randn(77, 8), P.cache_key(""): torch.randn(77, 8)}
    P.write_cache(cache, entries)
    from safetensors import safe_open
    with safe_open(str(cache), framework="pt") as f:
        metadata = f.metadata()
        assert set(f.keys()) == set(entries)
    assert metadata["format"] == P.FORMAT == "minidiff-prompt-embeds/2"
    assert json.loads(metadata["crc32"]) == {k: f"{zlib.crc32(v.numpy().tobytes()):08x}" for k, v in entries.items()}
    back = P.read_cache(cache)
    assert all(torch.equal(back[k], v) for k, v in entries.items())
    assert list(cache.parent.iterdir()) == [cache]  # no temporary file left behind


def _save_with_checksums(cache, entries):
    """A cache written as write_cache would, whatever the entries hold (to plant NaNs and wrong shapes)."""
    save_file(entries, str(cache), metadata={"format": P.FORMAT, "crc32": json.dumps(
        {k: f"{zlib.crc32(v.numpy().tobytes()):08x}" for k, v in entries.items()})})


DAMAGES = ["garbage", "truncated", "wrong format", "bad entry", "flipped bit", "nan", "inf", "wrong shape",
           "wrong dtype", "two widths", "older format without checksums", "a folder"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_corrupted_cache_is_detected(tmp_path, damage):
    """Every way a cache can be damaged is one line naming the file and the fix, before any value is used."""
    cache = tmp_path / "embeds.safetensors"
    P.write_cache(cache, {P.cache_key("a dog"): torch.randn(77, 8)})
    key = P.cache_key("a dog")
    if damage == "garbage":
        cache.write_bytes(b"\x00not a safetensors file at all")
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:-100])
    elif damage == "wrong format":
        save_file({key: torch.randn(77, 8)}, str(cache), metadata={"format": "other"})
    elif damage == "bad entry":
        _save_with_checksums(cache, {"a dog": torch.randn(77, 8)})
    elif damage == "flipped bit":                  # one bit of the last float's mantissa: a tiny change, still found
        raw = bytearray(cache.read_bytes())
        raw[-4] ^= 0x01
        cache.write_bytes(bytes(raw))
    elif damage in ("nan", "inf"):
        bad = torch.randn(77, 8)
        bad[3, 5] = float(damage)
        _save_with_checksums(cache, {key: bad})
    elif damage == "wrong shape":
        _save_with_checksums(cache, {key: torch.randn(76, 8)})
    elif damage == "wrong dtype":
        _save_with_checksums(cache, {key: torch.randn(77, 8, dtype=torch.float64)})
    elif damage == "two widths":
        _save_with_checksums(cache, {key: torch.randn(77, 8), P.cache_key(""): torch.randn(77, 16)})
    elif damage == "older format without checksums":
        save_file({key: torch.randn(77, 8)}, str(cache), metadata={"format": "minidiff-prompt-embeds/1"})
    else:
        cache.unlink()
        cache.mkdir()
    with pytest.raises(P.PromptCacheError) as e:
        P.encode_prompts(["a dog"], cache_path=cache)
    message = str(e.value)
    assert "\n" not in message and str(cache) in message
    assert ("delete" in message) if damage != "a folder" else ("folder" in message and "file path" in message)


def test_write_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous cache intact and no temporary file; a successful write
    replaces the file with os.replace from the same folder."""
    cache = tmp_path / "embeds.safetensors"
    P.write_cache(cache, {P.cache_key("a dog"): torch.ones(77, 8)})
    before = cache.read_bytes()

    import safetensors.torch
    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        P.write_cache(cache, {P.cache_key("a cat"): torch.zeros(77, 8)})
    assert cache.read_bytes() == before and list(tmp_path.iterdir()) == [cache]
    monkeypatch.undo()

    replaced = []
    import os
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst)))
    P.write_cache(cache, {P.cache_key("a cat"): torch.zeros(77, 8)})
    (src, dst), = replaced
    assert dst == cache and src.parent == cache.parent and src != cache
    assert list(P.read_cache(cache)) == [P.cache_key("a cat")]


def test_missing_prompt_and_no_t5_is_a_one_line_error(tmp_path, monkeypatch):
    def gated(*args, **kwargs):
        raise OSError("You are trying to access a gated repo.\nMake sure to have access to it.")
    monkeypatch.setattr(hub, "load_tokenizer", gated)
    monkeypatch.setattr(hub, "load_text_encoder", gated)
    with pytest.raises(P.PromptCacheError) as e:
        P.encode_prompts(["a photo of a dog"], cache_path=tmp_path / "embeds.safetensors")
    message = str(e.value)
    assert "\n" not in message and "huggingface-cli login" in message and "python -m minidiff.prompts" in message
    assert isinstance(e.value.__cause__, OSError)  # the original error is kept, not swallowed
    with pytest.raises(SystemExit) as e:  # the command prints the same line, without a traceback
        P.main(["a photo of a dog", "--cache", str(tmp_path / "embeds.safetensors")])
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)


def test_missing_prompt_offline_hub_is_a_one_line_error(tmp_path, monkeypatch):
    """The real loaders, offline with an empty Hub cache: the failure becomes our one-line error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(P.PromptCacheError) as e:
        P.encode_prompts([""], "DeepFloyd/IF-I-XL-v1.0", cache_path=tmp_path / "embeds.safetensors")
    assert "\n" not in str(e.value) and "python -m minidiff.prompts" in str(e.value)


def test_refuses_a_single_string(tmp_path):
    with pytest.raises(TypeError):
        P.encode_prompts("a dog", cache_path=tmp_path / "c.safetensors")


def test_command_line(hub_folder, tmp_path, capsys, counting):
    cache = tmp_path / "embeds.safetensors"
    P.main(["a pencil", "a rocket ship", "--source", str(hub_folder), "--cache", str(cache), "--dtype", "float32"])
    assert counting == {"loads": 1, "prompts": 2}
    assert "0 of 2 prompts already cached" in capsys.readouterr().out
    P.main(["a pencil", "", "--source", str(hub_folder), "--cache", str(cache), "--dtype", "float32"])
    assert counting == {"loads": 2, "prompts": 3}
    assert len(P.read_cache(cache)) == 3
    P.main(["a pencil", "", " A Pencil", "--source", str(hub_folder), "--cache", str(cache)])
    assert counting["loads"] == 2 and "2 of 2 prompts already cached" in capsys.readouterr().out


# --- the course's precomputed embeddings ------------------------------------------------------------------------


class NotATensor:                                  # pickled code: what weights_only=True refuses to run
    def __reduce__(self):
        return (print, ("this ran",))


def test_import_course_embeddings_fall_2024_and_2025(tmp_path, monkeypatch, capsys):
    """The fall 2024 dict and the fall 2025 per-prompt files go into the cache as float32 under the shared T5's key;
    the stages' prompts then never load T5."""
    cache = tmp_path / "embeds.safetensors"
    torch.manual_seed(0)
    course = {"a rocket ship": torch.randn(1, 77, 16).half(), "": torch.randn(1, 77, 16).half()}
    torch.save(course, tmp_path / "prompt_embeds_dict.pth")
    P.main(["import", str(tmp_path / "prompt_embeds_dict.pth"), "--cache", str(cache)])
    assert capsys.readouterr().out.strip() == f"imported 2 embedding(s) into {cache}"
    one_prompt = torch.randn(1, 77, 16, dtype=torch.bfloat16)
    torch.save(one_prompt, tmp_path / "pencil.pth")                   # a bare tensor: its prompt on the command line
    torch.save({"A Pencil ": one_prompt, "a rocket ship": torch.zeros(77, 16)}, tmp_path / "dict.pth")
    assert P.import_embeddings([tmp_path / "pencil.pth"], prompt="a pencil", cache_path=cache) == (1, 0)
    assert P.import_embeddings([tmp_path / "dict.pth"], cache_path=cache) == (0, 2)     # cached ones are kept

    entries = P.read_cache(cache)
    assert set(entries) == {P.cache_key(p, "DeepFloyd/IF-I-XL-v1.0") for p in ("a rocket ship", "", "a pencil")}
    assert torch.equal(entries[P.cache_key("a rocket ship")], course["a rocket ship"][0].float())
    monkeypatch.setattr(hub, "load_text_encoder", lambda *a, **k: pytest.fail("T5 loaded for an imported prompt"))
    embeds = P.encode_prompts(["a rocket ship", "A pencil", ""], cache_path=cache)            # (3, 77, 16)
    assert torch.equal(embeds[1], one_prompt[0].float()) and embeds.dtype == torch.float32


@pytest.mark.parametrize("bad, words", [
    ({"a dog": torch.randn(1, 76, 16)}, "the embedding of 'a dog' is torch.float32 (1, 76, 16), expected (1, 77,"),
    ({"a dog": torch.randn(2, 77, 16)}, "is torch.float32 (2, 77, 16)"),
    ({"a dog": torch.randn(1, 77, 16).long()}, "torch.int64"),
    ({"a dog": torch.full((1, 77, 16), float("nan"))}, "non-finite values"),
    ({"a dog": "not a tensor"}, "is str, expected"),
    ({"a dog": torch.randn(1, 77, 24)}, "[16, 24] wide, mixed with the cache"),
    (torch.randn(1, 77, 16), "without its prompt: say which with --prompt TEXT"),
    ([torch.randn(1, 77, 16)], "is not course embeddings: expected {prompt: (1, 77, d_model) tensor}, got list"),
    (NotATensor(), "cannot read"),
    (b"garbage", "cannot read"),
])
def test_import_refuses_what_is_not_course_embeddings_in_one_line(tmp_path, capsys, bad, words):
    cache = tmp_path / "embeds.safetensors"
    P.write_cache(cache, {P.cache_key("a cat"): torch.zeros(77, 16)})
    before = cache.read_bytes()
    file = tmp_path / "embeds.pth"
    if isinstance(bad, bytes):
        file.write_bytes(bad)
    else:
        torch.save(bad, file)
    with pytest.raises(SystemExit) as e:
        P.main(["import", str(file), "--cache", str(cache)])
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message and words in message, message
    assert "this ran" not in capsys.readouterr().out and cache.read_bytes() == before
