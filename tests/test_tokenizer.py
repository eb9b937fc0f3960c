"""T5Tokenizer on a sentencepiece model trained here (T5's special ids: pad 0, eos 1, unk 2, no bos).

The reference is what transformers 4.x's slow T5Tokenizer returns with padding="max_length",
truncation=True, max_length=77 (IF's call), recomputed independently from SentencePieceProcessor:
sentencepiece ids truncated to 76, then </s> (1), then 0 up to 77; mask 1 on ids and </s>.
"""
import io
import warnings

import pytest
import torch

from minidiff.t5 import T5Tokenizer, preprocess_prompt

spm = pytest.importorskip("sentencepiece")

CORPUS = [
    "a photo of a dog", "a photo of a man", "a photo of a hipster barista", "a man wearing a hat",
    "a rocket ship", "a photo of a rocket ship", "a lithograph of a waterfall", "a lithograph of a skull",
    "a lithograph of waterfalls", "an oil painting of a snowy mountain village", "a pencil",
    "an oil painting of people around a campfire", "an oil painting of an old man", "a high quality photo",
    "a photo of the amalfi cost", "a photograph of a snowy mountain village", "the quick brown fox jumps",
    "über café naïve façade", "東京 の 写真", "diffusion models denoise images step by step",
] * 5


@pytest.fixture(scope="module")
def spiece_path(tmp_path_factory):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=120, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("tokenizer") / "spiece.model"
    path.write_bytes(model.getvalue())
    return path


def reference(spiece_path, prompt: str, max_length: int = 77):
    """transformers 4.x slow T5Tokenizer, recomputed from sentencepiece directly."""
    sp = spm.SentencePieceProcessor(model_file=str(spiece_path))
    ids = sp.encode(prompt, out_type=int)[: max_length - 1] + [1]
    pad = max_length - len(ids)
    return ids + [0] * pad, [1] * len(ids) + [0] * pad


@pytest.mark.parametrize("prompt", [
    "a photo of a dog",                       # short, in-vocabulary
    "",                                       # empty: the unconditional prompt, just </s>
    "A Rocket Ship",                          # uppercase (not preprocessed by the tokenizer itself)
    "über café 東京 naïve ✨ zebra",            # unicode, including characters unseen in training (unk)
])
def test_ids_and_mask_match_reference(spiece_path, prompt):
    tok = T5Tokenizer(spiece_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning for these
        input_ids, attention_mask = tok([prompt])
    ids, mask = reference(spiece_path, prompt)
    assert input_ids.dtype == attention_mask.dtype == torch.int64
    assert input_ids.shape == attention_mask.shape == (1, 77)
    assert input_ids[0].tolist() == ids and attention_mask[0].tolist() == mask
    if "✨" in prompt:
        assert 2 in ids  # unseen characters are <unk>


def test_empty_prompt_is_eos_then_padding(spiece_path):
    input_ids, attention_mask = T5Tokenizer(spiece_path)([""])
    assert input_ids[0].tolist() == [1] + [0] * 76
    assert attention_mask[0].tolist() == [1] + [0] * 76


def test_long_prompt_is_truncated_with_a_warning(spiece_path):
    prompt = " ".join(["a lithograph of a waterfall"] * 30)
    sp = spm.SentencePieceProcessor(model_file=str(spiece_path))
    assert len(sp.encode(prompt)) > 76
    with pytest.warns(UserWarning, match="truncated"):
        input_ids, attention_mask = T5Tokenizer(spiece_path)([prompt])
    ids, mask = reference(spiece_path, prompt)
    assert input_ids[0].tolist() == ids and ids[-1] == 1 and 0 not in ids
    assert attention_mask[0].tolist() == mask == [1] * 77


def test_exactly_76_tokens_is_not_truncated(spiece_path):
    sp = spm.SentencePieceProcessor(model_file=str(spiece_path))
    prompt = " ".join(["dog"] * 200)
    pieces = sp.encode(prompt)
    text = sp.decode(pieces[:76])
    assert len(sp.encode(text)) == 76
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        input_ids, attention_mask = T5Tokenizer(spiece_path)([text])
    assert input_ids[0].tolist() == reference(spiece_path, text)[0] and attention_mask.sum() == 77


def test_batch_and_custom_max_length(spiece_path):
    prompts = ["a photo of a dog", "", "an oil painting of an old man"]
    with pytest.warns(UserWarning, match="truncated"):  # the third prompt is longer than 15 pieces
        input_ids, attention_mask = T5Tokenizer(spiece_path, max_length=16)(prompts)
    assert input_ids.shape == (3, 16)
    for i, p in enumerate(prompts):
        ids, mask = reference(spiece_path, p, max_length=16)
        assert input_ids[i].tolist() == ids and attention_mask[i].tolist() == mask


def test_refuses_a_single_string_and_a_non_t5_model(spiece_path, tmp_path):
    with pytest.raises(TypeError):
        T5Tokenizer(spiece_path)("a photo of a dog")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2)  # default ids: unk 0, bos 1, eos 2
    path = tmp_path / "other.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(ValueError, match="pad=0, eos=1"):
        T5Tokenizer(path)


def test_preprocess_prompt_lowercases_and_strips():
    assert preprocess_prompt("  A Photo of a DOG \n") == "a photo of a dog"
    assert preprocess_prompt("") == ""
    assert preprocess_prompt("Über Café") == "über café"
