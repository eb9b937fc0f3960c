"""The T5 v1.1 encoder and its tokenizer: how DeepFloyd IF turns a prompt into (77, 4096) numbers.

IF conditions its UNets on the last hidden states of the encoder half of T5 v1.1 XXL
(Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer";
v1.1 changes: gated-GELU feed-forward, no parameter sharing between embedding and classifier, no dropout
at inference). The path of a prompt (report 5A, "Setup"; DESIGN §5):

    text --preprocess_prompt--> "a photo of a dog"              lowercase + strip (IF's preprocessing)
         --T5Tokenizer-->       input_ids, attention_mask       (B, 77) each: sentencepiece ids + </s>, pad 0
         --T5Encoder-->         hidden states                   (B, 77, d_model) = (B, 77, 4096) for XXL

The encoder is a stack of pre-norm Transformer blocks (Vaswani et al. 2017) with T5's particularities:
- embeddings are looked up from `shared` and NOT scaled by sqrt(d_model); there are no absolute positions;
- RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * w, no mean subtraction, no bias,
  statistics in float32;
- attention logits are q.k with NO 1/sqrt(d_kv) scaling (T5 folds it into the initialization), plus a
  learned relative position bias: each (query, key) offset falls in one of 32 buckets (Raffel et al. 2020,
  §2.1), each bucket has one learned scalar per head. Only the first block owns the bias table; the bias
  it produces is reused by every block;
- feed-forward: wo(gelu_tanh(wi_0 x) * wi_1 x), the gated GELU of Shazeer 2020 ("GLU Variants Improve
  Transformer"), with the tanh approximation of GELU ("gelu_new");
- padding: keys where attention_mask == 0 get a large negative additive bias, so no token attends to pads.
  Pad positions still get outputs (IF's UNet uses all 77 positions, without a mask).

Run T5 in bfloat16 or float32, never float16: T5 v1.1 activations overflow float16's range.
The module tree mirrors the published state-dict keys (shared.weight, encoder.block.{i}.layer.{0,1}...,
encoder.final_layer_norm.weight), so weights load with strict=True and no rename table. Checkpoints saved
by transformers may also hold `encoder.embed_tokens.weight`, a tied copy of `shared.weight`; the hub loader
drops it (minidiff.hub), this module does not know it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class T5Config:
    """Shapes of a T5 v1.1 encoder. Defaults = T5 v1.1 XXL as used by DeepFloyd IF (text_encoder/config.json)."""

    vocab_size: int = 32128
    d_model: int = 4096                          # width of the residual stream
    d_kv: int = 64                               # width of one attention head
    d_ff: int = 10240                            # width of the gated feed-forward
    num_layers: int = 24                         # encoder blocks
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    @classmethod
    def from_dict(cls, d: dict) -> "T5Config":
        """Read a Hub `text_encoder/config.json` (transformers' T5Config). Refuse what we do not implement."""
        if d.get("model_type", "t5") != "t5":
            raise ValueError(f"T5Config: model_type {d.get('model_type')!r} is not supported (only 't5' v1.1)")
        if d.get("feed_forward_proj", "relu") != "gated-gelu":
            raise ValueError(f"T5Config: feed_forward_proj {d.get('feed_forward_proj', 'relu')!r} is not supported "
                             "(only 'gated-gelu', T5 v1.1)")
        if d.get("dense_act_fn", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"T5Config: dense_act_fn {d['dense_act_fn']!r} is not supported "
                             "(only the tanh GELU: 'gelu_new' or 'gelu_pytorch_tanh')")
        if d.get("is_decoder", False):
            raise ValueError("T5Config: is_decoder=True is not supported (encoder only)")
        required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"T5Config: config is missing {', '.join(missing)}")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


# ----------------------------------------------------------------------------------------------------------
# Maths as plain functions


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's bidirectional relative-position buckets (Raffel et al. 2020, §2.1; Mesh TensorFlow's
    `_relative_position_bucket`).

    relative_position = key position - query position. Half the buckets are for keys to the right of the
    query (offset > 0), half for keys at or to the left. Within each half, with n = |offset| and
    max_exact = num_buckets / 4:
        n <  max_exact:  bucket n                                           (one bucket per offset)
        n >= max_exact:  max_exact + floor(log(n / max_exact) / log(max_distance / max_exact)
                                           * (num_buckets / 2 - max_exact))  (log-spaced, up to max_distance)
    capped at num_buckets / 2 - 1, so every |offset| >= max_distance shares the last bucket.
    The log is taken in float32 in this exact order: pretrained tables were learned with these buckets.

    Args:
        relative_position: int64 tensor of any shape (typically (L, L)).
    Returns:
        int64 tensor of the same shape, values in [0, num_buckets).
    """
    half = num_buckets // 2
    right = (relative_position > 0).long() * half      # offset of the "key to the right" half
    n = relative_position.abs()
    max_exact = half // 2
    n_log = n.clamp(min=max_exact).float()             # clamp: log(0) is never needed, avoid -inf
    log_bucket = max_exact + (torch.log(n_log / max_exact) / math.log(max_distance / max_exact)
                              * (half - max_exact)).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return right + torch.where(n < max_exact, n, log_bucket)


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias for padded keys: 0 where attention_mask == 1, the most negative finite value of
    `dtype` where it is 0. Finite (not -inf) so that softmax stays defined even on an all-pad row.

    Args:
        attention_mask: (B, L) int or bool, 1 = real token, 0 = padding.
    Returns:
        (B, 1, 1, L) tensor of `dtype`, broadcast over heads and queries.
    """
    keep = attention_mask.to(torch.bool)[:, None, None, :]                 # (B, 1, 1, L)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


# ----------------------------------------------------------------------------------------------------------
# Modules (names = the published state-dict keys)


class T5RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019): no mean subtraction, no bias.
    The statistics and the division are computed in float32; the result is cast to the weight's dtype
    before the weight multiply (as T5's reference implementation does)."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        x32 = x.float()
        variance = x32.pow(2).mean(-1, keepdim=True)                   # (B, L, 1) float32
        x_normed = x32 * torch.rsqrt(variance + self.eps)
        return self.weight * x_normed.to(self.weight.dtype)


class T5Attention(nn.Module):
    """Multi-head self-attention without 1/sqrt(d_kv) scaling. The block that owns `relative_attention_bias`
    (block 0) also turns token offsets into the bias shared by all blocks."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        self.config = config
        inner = config.num_heads * config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)

    def position_bias(self, L: int, device: torch.device) -> torch.Tensor:
        """The learned bias b[head, bucket(key - query)] for a sequence of L tokens.
        Returns: (1, H, L, L) in the bias table's dtype."""
        position = torch.arange(L, dtype=torch.long, device=device)
        relative_position = position[None, :] - position[:, None]    # (L, L): [query, key] = key - query
        buckets = relative_position_bucket(relative_position, self.config.relative_attention_num_buckets,
                                           self.config.relative_attention_max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (L, L, H) -> (1, H, L, L)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D); attn_bias: (B or 1, H, L, L) position bias + padding bias. Returns (B, L, D)."""
        B, L, _ = x.shape
        H, d_kv = self.config.num_heads, self.config.d_kv
        q = self.q(x).view(B, L, H, d_kv).transpose(1, 2)             # (B, H, L, d_kv)
        k = self.k(x).view(B, L, H, d_kv).transpose(1, 2)
        v = self.v(x).view(B, L, H, d_kv).transpose(1, 2)
        # softmax(q k^T + bias) v, with scale=1.0: T5 does not divide by sqrt(d_kv)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype), scale=1.0)
        return self.o(out.transpose(1, 2).reshape(B, L, H * d_kv))


class T5LayerSelfAttention(nn.Module):
    """Pre-norm residual sublayer: x + Attention(RMSNorm(x))."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias)
        self.layer_norm = T5RMSNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), attn_bias)


class T5DenseGatedGelu(nn.Module):
    """wo(gelu_tanh(wi_0 x) * wi_1 x)   (Shazeer 2020, GEGLU; tanh-approximate GELU = "gelu_new")."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)   # (B, L, d_ff)
        # The float16 path (hub.load_text_encoder(dtype=torch.float16), for GPUs without bf16) keeps `wo` in
        # float32, as the published fp16 shards store it and transformers runs T5 v1.1: its output, which
        # overflows float16 in the XXL model, stays float32, and the residual sum it joins is promoted to float32.
        return self.wo(h.to(self.wo.weight.dtype))


class T5LayerFF(nn.Module):
    """Pre-norm residual sublayer: x + FFN(RMSNorm(x)). (`DenseReluDense` is the published key name.)"""

    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedGelu(config)
        self.layer_norm = T5RMSNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, has_relative_attention_bias), T5LayerFF(config)])

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        return clamp_inf_fp16(self.layer[1](clamp_inf_fp16(self.layer[0](x, attn_bias))))


def clamp_inf_fp16(x: torch.Tensor) -> torch.Tensor:
    """transformers' guard of the float16 residual stream of T5: if a sublayer overflowed, replace +-inf by
    +-(the largest float16 - 1000), so that RMSNorm can still divide (inf / inf would be NaN). Other dtypes: x."""
    if x.dtype != torch.float16:
        return x
    big = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(x).any(), big - 1000, big)
    return x.clamp(-limit, limit)


class T5Stack(nn.Module):
    """The blocks and the final norm (key prefix `encoder.`). Only block 0 has a relative-bias table."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.block = nn.ModuleList([T5Block(config, has_relative_attention_bias=(i == 0))
                                    for i in range(config.num_layers)])
        self.final_layer_norm = T5RMSNorm(config.d_model, config.layer_norm_epsilon)


class T5Encoder(nn.Module):
    """T5 v1.1 encoder (inference only: no dropout). Build big ones on the meta device and load with
    `load_state_dict(sd, strict=True, assign=True)` (see minidiff.hub.load_text_encoder)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode token ids.

        Args:
            input_ids: (B, L) int64 token ids in [0, vocab_size).
            attention_mask: (B, L) 1 for tokens, 0 for padding, or None (attend to everything).
        Returns:
            (B, L, d_model) last hidden states, after the final RMSNorm, in the weights' dtype and device.
        """
        B, L = input_ids.shape
        x = self.shared(input_ids)                                      # (B, L, D), no sqrt(D) scaling
        blocks = self.encoder.block
        # Relative position bias from block 0's table, computed once and reused by every block.
        attn_bias = blocks[0].layer[0].SelfAttention.position_bias(L, x.device).to(x.dtype)  # (1, H, L, L)
        if attention_mask is not None:
            attn_bias = attn_bias + padding_bias(attention_mask, x.dtype)                    # (B, H, L, L)
        for block in blocks:
            x = block(x, attn_bias)
        return self.encoder.final_layer_norm(x)


# ----------------------------------------------------------------------------------------------------------
# Tokenizer


def preprocess_prompt(text: str) -> str:
    """DeepFloyd IF's prompt preprocessing (without its optional caption cleaning): lowercase, then strip
    surrounding whitespace. "  A Photo of a Dog " -> "a photo of a dog". Applied before tokenizing and used
    as the prompt-cache key (minidiff.prompts). The tokenizer itself does not call it."""
    return text.lower().strip()


class T5Tokenizer:
    """T5's tokenizer on a sentencepiece model (`tokenizer/spiece.model` on the Hub).

    ids = sentencepiece ids, truncated to max_length - 1, then `</s>` (id 1), then padding with id 0 to
    max_length; attention_mask = 1 on ids and `</s>`, 0 on padding. This is what transformers' T5Tokenizer
    (4.x, slow, legacy mode) returns with padding="max_length", truncation=True, which IF uses, except that
    special-token strings typed in a prompt ("</s>", "<extra_id_0>") are tokenized as plain text here.
    Warns (warnings.warn) when a prompt is truncated.
    """

    pad_id = 0
    eos_id = 1

    def __init__(self, spiece_model_path, max_length: int = 77):
        import sentencepiece  # imported here: only prompt encoding needs it

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(spiece_model_path))
        self.max_length = max_length
        if self.sp.pad_id() != self.pad_id or self.sp.eos_id() != self.eos_id:
            raise ValueError(f"T5Tokenizer: {spiece_model_path} has pad={self.sp.pad_id()}, eos={self.sp.eos_id()}; "
                             "T5 needs pad=0, eos=1")

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: prompts, a list of B strings (already preprocessed if you want IF's behaviour).
        Returns: input_ids, attention_mask, each (B, max_length) int64 on the CPU."""
        if isinstance(prompts, str):
            raise TypeError("T5Tokenizer expects a list of prompts, got a single string")
        input_ids = torch.full((len(prompts), self.max_length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), self.max_length), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids = self.sp.encode(prompt)
            if len(ids) > self.max_length - 1:
                warnings.warn(f"prompt truncated to {self.max_length} tokens ({len(ids) + 1} with </s>): {prompt!r}",
                              stacklevel=2)
                ids = ids[: self.max_length - 1]
            ids = ids + [self.eos_id]
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
        return input_ids, attention_mask
