"""The DeepFloyd IF UNet (stage I, 64 px, and stage II, 64 -> 256 px), inference only.

IF (DeepFloyd 2023) is a pixel-space cascade of text-conditioned UNets in the style of Imagen
(Saharia et al. 2022) and improved DDPM (Nichol & Dhariwal 2021). One network predicts, from a noisy
image x_t, a timestep t and the T5 embedding of a prompt, the noise eps_hat (output channels 0-2) and the
variance value v_hat (channels 3-5; DESIGN §2, [A.3]). The pieces, top to bottom:

- time embedding: sinusoid(t) (Vaswani et al. 2017, §3.5; Ho et al. 2020, App. B) -> Linear, GELU, Linear;
  plus the prompt pooled by attention (LayerNorm -> one-query attention pooling, no output projection
  -> Linear -> LayerNorm); stage II also adds its noise level, through the same sinusoid and its own MLP;
- the prompt, projected from T5's width (4096) to `cross_attention_dim` (`encoder_hid_proj`), is read by
  every attention layer: text keys/values come FIRST, then the image's own (self-)keys/values;
- ResNet blocks (He et al. 2016) with scale-shift time conditioning, h = norm(h) * (1 + scale) + shift
  (Nichol & Dhariwal 2021, §3 "AdaGN"), the residual sum divided by `resnet_out_scale_factor`;
  down/up sampling is itself a ResNet block (average pooling / nearest upsampling, BigGAN-style);
- a mid block (ResNet, attention, ResNet), then an out GroupNorm, GELU and convolution.

The module tree mirrors the state-dict keys of diffusers' UNet2DConditionModel (time_embedding.linear_1,
add_embedding.pool.q_proj, down_blocks.1.attentions.0.add_k_proj, ...), so published weights load with
strict=True and no rename table (minidiff.hub). Every shape is read from the config: nothing is
hard-coded to IF-I-XL. Activations are exact (erf) GELU. No attention mask: pad tokens take part.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

DOWN_BLOCKS = ("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D")
UP_BLOCKS = ("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D")

# config.json options we accept only at these values (what every IF UNet uses); anything else is refused.
_FIXED_OPTIONS = {
    "_class_name": ("UNet2DConditionModel",), "act_fn": ("gelu",), "addition_embed_type": ("text",),
    "addition_time_embed_dim": (None,), "attention_type": ("default",), "center_input_sample": (False,),
    "class_embeddings_concat": (False,), "cross_attention_norm": ("group_norm",), "dual_cross_attention": (False,),
    "encoder_hid_dim_type": ("text_proj",), "mid_block_only_cross_attention": (None, False),
    "mid_block_type": ("UNetMidBlock2DSimpleCrossAttn",), "num_attention_heads": (None,),
    "num_class_embeds": (None,), "only_cross_attention": (False,), "projection_class_embeddings_input_dim": (None,),
    "resnet_time_scale_shift": ("scale_shift",), "reverse_transformer_layers_per_block": (None,),
    "time_cond_proj_dim": (None,), "time_embedding_type": ("positional",), "timestep_post_act": (None,),
    "transformer_layers_per_block": (1,), "upcast_attention": (False,), "use_linear_projection": (False,),
}
# options with no effect on this architecture at inference (metadata, dropout, conv-downsampler padding).
_IGNORED_OPTIONS = {"_diffusers_version", "_name_or_path", "_use_default_values", "dropout", "downsample_padding"}


@dataclass(frozen=True)
class IFUNetConfig:
    """Shapes and options of an IF UNet. Defaults = IF-I-XL-v1.0 (stage I, 4.3 B parameters)."""

    in_channels: int = 3                       # stage II: 6 = noisy x_t (3) + noised upsampled stage-I image (3)
    out_channels: int = 6                      # eps_hat (3) + v_hat (3)
    sample_size: int = 64
    block_out_channels: tuple[int, ...] = (704, 1408, 2112, 2816)
    layers_per_block: tuple[int, ...] = (3, 3, 3, 3)
    down_block_types: tuple[str, ...] = ("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3
    up_block_types: tuple[str, ...] = ("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",)
    attention_head_dim: int = 64               # heads = channels // attention_head_dim
    cross_attention_dim: int = 2816            # width of the projected text tokens
    encoder_hid_dim: int = 4096                # width of the raw T5 output
    addition_embed_type_num_heads: int = 64    # heads of the text attention pooling
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    resnet_out_scale_factor: float = 1.0       # stage II: sqrt(2)
    resnet_skip_time_act: bool = False         # stage II: True (no GELU before each block's time projection)
    mid_block_scale_factor: float = 1.0
    time_embedding_dim: int | None = None      # None: 4 * block_out_channels[0]
    time_embedding_act_fn: str | None = None   # stage II: "gelu", applied after summing the embeddings
    class_embed_type: str | None = None        # stage II: "timestep" (the noise level, embedded like t)
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @classmethod
    def from_dict(cls, d: dict) -> "IFUNetConfig":
        """Read a diffusers `unet/config.json`; refuse, with a one-line ValueError, what we do not implement."""
        fields = set(cls.__dataclass_fields__)
        kwargs = {}
        for key, value in d.items():
            if key in _IGNORED_OPTIONS:
                continue
            if key in _FIXED_OPTIONS:
                if value not in _FIXED_OPTIONS[key]:
                    raise ValueError(f"unsupported UNet config option {key}={value!r}: minidiff implements only "
                                     f"{' or '.join(map(repr, _FIXED_OPTIONS[key]))} (the DeepFloyd IF UNet)")
                continue
            if key not in fields:
                raise ValueError(f"unknown UNet config option {key}={value!r}: minidiff implements only the "
                                 "DeepFloyd IF UNet")
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        n = len(kwargs.get("block_out_channels", cls.block_out_channels))
        if isinstance(kwargs.get("layers_per_block"), int):
            kwargs["layers_per_block"] = (kwargs["layers_per_block"],) * n
        config = cls(**kwargs)
        config.validate()
        return config

    def to_dict(self) -> dict:
        """The diffusers-format config.json that from_dict reads back."""
        d = {key: allowed[0] for key, allowed in _FIXED_OPTIONS.items()}
        d.update({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()})
        return d

    def validate(self) -> None:
        n = len(self.block_out_channels)
        if not len(self.layers_per_block) == len(self.down_block_types) == len(self.up_block_types) == n:
            raise ValueError(f"UNet config: layers_per_block, down_block_types and up_block_types need {n} entries "
                             "each, one per block_out_channels")
        checks = {  # name: (refused?, what we implement)
            "down_block_types": (not set(self.down_block_types) <= set(DOWN_BLOCKS), DOWN_BLOCKS),
            "up_block_types": (not set(self.up_block_types) <= set(UP_BLOCKS), UP_BLOCKS),
            "attention_head_dim": (not isinstance(self.attention_head_dim, int), "one int"),
            "cross_attention_dim": (not isinstance(self.cross_attention_dim, int), "one int"),
            "norm_num_groups": (not isinstance(self.norm_num_groups, int), "one int"),
            "time_embedding_act_fn": (self.time_embedding_act_fn not in (None, "gelu"), (None, "gelu")),
            "class_embed_type": (self.class_embed_type not in (None, "timestep"), (None, "timestep")),
        }
        for name, (refused, allowed) in checks.items():
            if refused:
                raise ValueError(f"unsupported UNet config option {name}={getattr(self, name)!r}: "
                                 f"minidiff implements {allowed}")


# ----------------------------------------------------------------------------------------------------------
# Maths as plain functions


def sinusoidal_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0):
    """Transformer sinusoid of a timestep (Vaswani et al. 2017, §3.5; Ho et al. 2020, App. B):
    freq_k = 10000^(-k / (dim/2 - freq_shift)), emb = [cos(t freq), sin(t freq)] (or [sin, cos]).

    Args:
        t: (B,) timesteps or noise levels, int or float, any device.
    Returns:
        (B, dim) float32 on t's device.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * k / (half - freq_shift))  # (dim/2,)
    args = t.float()[:, None] * freqs[None, :]                        # (B, dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)] if flip_sin_to_cos else [torch.sin(args), torch.cos(args)], -1)
    return F.pad(emb, (0, dim % 2))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * d) -> (B, heads, L, d)"""
    B, L, _ = x.shape
    return x.view(B, L, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d) -> (B, L, heads * d)"""
    B, heads, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, heads * d)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1), (B, heads, Lq, d) x (B, heads, Lk, d).
    PyTorch's fused kernels accumulate the softmax in float32 for fp16/bf16 inputs, so it is safe there."""
    return F.scaled_dot_product_attention(q, k, v)


# ----------------------------------------------------------------------------------------------------------
# Embeddings


class TimestepMLP(nn.Module):
    """sinusoid(t) (B, C0) -> Linear -> GELU -> Linear -> (B, time_embed_dim). Keys: linear_1, linear_2."""

    def __init__(self, in_dim: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


class AttentionPooling(nn.Module):
    """Pool L text tokens into one vector with one query (IF; CLIP's attention pool without output projection):
    the query token is mean(tokens) + a learned position; it attends over [itself, tokens]."""

    def __init__(self, num_heads: int, dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(torch.randn(1, dim) / dim**0.5)
        self.k_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, D)
        query_token = x.mean(dim=1, keepdim=True) + self.positional_embedding.to(x.dtype)  # (B, 1, D)
        x = torch.cat([query_token, x], dim=1)                                               # (B, L + 1, D)
        q = split_heads(self.q_proj(query_token), self.num_heads)                            # (B, h, 1, d)
        k = split_heads(self.k_proj(x), self.num_heads)                                      # (B, h, L + 1, d)
        v = split_heads(self.v_proj(x), self.num_heads)
        return merge_heads(attention(q, k, v))[:, 0]                                         # (B, D)


class TextPooling(nn.Module):
    """The prompt's share of the time embedding: LayerNorm -> AttentionPooling -> Linear -> LayerNorm.
    Keys: norm1, pool, proj, norm2 (diffusers' `add_embedding`)."""

    def __init__(self, text_dim: int, time_embed_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(text_dim)
        self.pool = AttentionPooling(num_heads, text_dim)
        self.proj = nn.Linear(text_dim, time_embed_dim)
        self.norm2 = nn.LayerNorm(time_embed_dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # (B, L, D_text) -> (B, time_embed_dim)
        return self.norm2(self.proj(self.pool(self.norm1(text))))


# ----------------------------------------------------------------------------------------------------------
# Blocks


class ResnetBlock(nn.Module):
    """GroupNorm, GELU, [resample], conv, scale-shift by the time embedding, GELU, conv; plus the skip path.

    out = (skip(x) + h) / output_scale_factor, with h = conv2(gelu(norm2(conv1(...)) * (1 + scale) + shift))
    (Nichol & Dhariwal 2021, §3; Dhariwal & Nichol 2021 "BigGAN" resampling inside the block when
    resample is "down" (2x2 average pooling) or "up" (2x nearest), applied to both paths).
    """

    def __init__(self, in_ch: int, out_ch: int, time_embed_dim: int, c: IFUNetConfig, scale_factor: float,
                 resample: str | None = None):
        super().__init__()
        self.resample, self.scale_factor, self.skip_time_act = resample, scale_factor, c.resnet_skip_time_act
        self.norm1 = nn.GroupNorm(c.norm_num_groups, in_ch, eps=c.norm_eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(time_embed_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(c.norm_num_groups, out_ch, eps=c.norm_eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W), (B, E)
        h = F.gelu(self.norm1(x))
        x, h = self._resample(x), self._resample(h)
        h = self.conv1(h)                                                       # (B, C_out, H', W')
        emb = emb if self.skip_time_act else F.gelu(emb)
        scale, shift = self.time_emb_proj(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C_out, 1, 1) each
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)                      # norm2(h) * (1 + scale) + shift
        h = self.conv2(F.gelu(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h if self.scale_factor == 1 else (x + h) / self.scale_factor


class SimpleCrossAttention(nn.Module):
    """Self-attention over the pixels whose keys/values are prefixed by the text's ("added KV" attention).

    keys = [add_k_proj(norm_cross(text)), to_k(group_norm(x))], likewise values; queries from the pixels only.
    Returns x + to_out(attention), (B, C, H, W). Keys: norm_cross, group_norm, to_q, to_k, to_v,
    add_k_proj, add_v_proj, to_out.0.
    """

    def __init__(self, channels: int, c: IFUNetConfig):
        super().__init__()
        self.heads = channels // c.attention_head_dim
        inner = self.heads * c.attention_head_dim
        self.norm_cross = nn.GroupNorm(32, c.cross_attention_dim, eps=1e-5)  # 32 groups in every IF UNet
        self.group_norm = nn.GroupNorm(c.norm_num_groups, channels, eps=1e-5)
        self.to_q = nn.Linear(channels, inner)
        self.to_k = nn.Linear(channels, inner)
        self.to_v = nn.Linear(channels, inner)
        self.add_k_proj = nn.Linear(c.cross_attention_dim, inner)
        self.add_v_proj = nn.Linear(c.cross_attention_dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, channels)])

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:  # (B, C, H, W), (B, L, D)
        B, C, H, W = x.shape
        text = self.norm_cross(text.transpose(1, 2)).transpose(1, 2)           # GroupNorm over D: (B, L, D)
        pixels = self.group_norm(x).flatten(2).transpose(1, 2).contiguous()     # (B, HW, C), read 3 times
        q = split_heads(self.to_q(pixels), self.heads)                          # (B, h, HW, d)
        k = split_heads(torch.cat([self.add_k_proj(text), self.to_k(pixels)], dim=1), self.heads)  # (B, h, L+HW, d)
        v = split_heads(torch.cat([self.add_v_proj(text), self.to_v(pixels)], dim=1), self.heads)
        out = self.to_out[0](merge_heads(attention(q, k, v)))                   # (B, HW, C)
        return x + out.transpose(1, 2).reshape(B, C, H, W)


class DownBlock(nn.Module):
    """`layers` ResNet blocks (each followed by attention in a SimpleCrossAttn block), then a downsampling
    ResNet unless last. Returns the output and every intermediate state, the skips of the up path."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, with_attention: bool, add_downsample: bool,
                 c: IFUNetConfig):
        super().__init__()
        E, s = c.time_embed_dim, c.resnet_out_scale_factor
        self.resnets = nn.ModuleList([ResnetBlock(in_ch if i == 0 else out_ch, out_ch, E, c, s) for i in range(layers)])
        self.attentions = nn.ModuleList([SimpleCrossAttention(out_ch, c) for _ in range(layers)] if with_attention else [])
        self.downsamplers = nn.ModuleList([ResnetBlock(out_ch, out_ch, E, c, s, "down")]) if add_downsample else None

    def forward(self, h, emb, text):
        skips = []
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, emb)
            if self.attentions:
                h = self.attentions[i](h, text)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h, emb)
            skips.append(h)
        return h, skips


class MidBlock(nn.Module):
    """ResNet, attention, ResNet at the lowest resolution (residuals scaled by mid_block_scale_factor)."""

    def __init__(self, ch: int, c: IFUNetConfig):
        super().__init__()
        E, s = c.time_embed_dim, c.mid_block_scale_factor
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, E, c, s), ResnetBlock(ch, ch, E, c, s)])
        self.attentions = nn.ModuleList([SimpleCrossAttention(ch, c)])

    def forward(self, h, emb, text):
        h = self.resnets[0](h, emb)
        return self.resnets[1](self.attentions[0](h, text), emb)


class UpBlock(nn.Module):
    """`layers` ResNet blocks, each eating one skip (concatenated on channels) and followed by attention in
    a SimpleCrossAttn block, then an upsampling ResNet unless last."""

    def __init__(self, skip_chs: list[int], prev_ch: int, out_ch: int, with_attention: bool, add_upsample: bool,
                 c: IFUNetConfig):
        super().__init__()
        E, s, n = c.time_embed_dim, c.resnet_out_scale_factor, len(skip_chs)
        in_chs = [prev_ch] + [out_ch] * (n - 1)
        self.resnets = nn.ModuleList([ResnetBlock(i + k, out_ch, E, c, s) for i, k in zip(in_chs, skip_chs)])
        self.attentions = nn.ModuleList([SimpleCrossAttention(out_ch, c) for _ in range(n)] if with_attention else [])
        self.upsamplers = nn.ModuleList([ResnetBlock(out_ch, out_ch, E, c, s, "up")]) if add_upsample else None

    def forward(self, h, skips, emb, text):
        for i, resnet in enumerate(self.resnets):
            h = resnet(torch.cat([h, skips.pop()], dim=1), emb)
            if self.attentions:
                h = self.attentions[i](h, text)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, emb)
        return h


# ----------------------------------------------------------------------------------------------------------
# The UNet


class IFUNet(nn.Module):
    """The IF UNet: unet(sample, timestep, encoder_hidden_states, class_labels=None) -> (B, out_channels, H, W).

    Follows its inputs' device and dtype (the weights' dtype); build big ones on the meta device and fill
    them with minidiff.hub.load_unet.
    """

    def __init__(self, config: IFUNetConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        ch, E, n = c.block_out_channels, c.time_embed_dim, len(c.block_out_channels)
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], c.conv_in_kernel, padding=(c.conv_in_kernel - 1) // 2)
        self.time_embedding = TimestepMLP(ch[0], E)
        self.encoder_hid_proj = nn.Linear(c.encoder_hid_dim, c.cross_attention_dim)
        self.class_embedding = TimestepMLP(ch[0], E) if c.class_embed_type == "timestep" else None
        self.add_embedding = TextPooling(c.encoder_hid_dim, E, c.addition_embed_type_num_heads)

        self.down_blocks = nn.ModuleList()
        skip_chs = [ch[0]]  # channels of every skip, in the order the down path makes them
        for i, kind in enumerate(c.down_block_types):
            last = i == n - 1
            in_ch = ch[max(i - 1, 0)]
            self.down_blocks.append(DownBlock(in_ch, ch[i], c.layers_per_block[i], "CrossAttn" in kind, not last, c))
            skip_chs += [ch[i]] * (c.layers_per_block[i] + (0 if last else 1))

        self.mid_block = MidBlock(ch[-1], c)

        self.up_blocks = nn.ModuleList()
        prev_ch = ch[-1]
        for i, kind in enumerate(c.up_block_types):
            out_ch = ch[n - 1 - i]
            layers = c.layers_per_block[n - 1 - i] + 1
            block_skips = [skip_chs.pop() for _ in range(layers)]
            self.up_blocks.append(UpBlock(block_skips, prev_ch, out_ch, "CrossAttn" in kind, i < n - 1, c))
            prev_ch = out_ch

        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, ch[0], eps=c.norm_eps)
        self.conv_out = nn.Conv2d(ch[0], c.out_channels, c.conv_out_kernel, padding=(c.conv_out_kernel - 1) // 2)

    def embed(self, sample, timestep, encoder_hidden_states, class_labels):
        """The time embedding (B, E): MLP(sinusoid(t)) + MLP(sinusoid(noise level)) + TextPooling(text)."""
        c, B = self.config, sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(B)          # (B,)
        sinus = lambda x: sinusoidal_embedding(x, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)
        emb = self.time_embedding(sinus(t).to(sample.dtype))                                # (B, E)
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this UNet is a stage II UNet: pass class_labels, the noise level (B,)")
            level = torch.as_tensor(class_labels, device=sample.device).reshape(-1).expand(B)
            emb = emb + self.class_embedding(sinus(level).to(sample.dtype))
        emb = emb + self.add_embedding(encoder_hidden_states)
        return F.gelu(emb) if c.time_embedding_act_fn == "gelu" else emb

    def forward(self, sample: torch.Tensor, timestep: int | torch.Tensor, encoder_hidden_states: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Predict [eps_hat, v_hat] for x_t.

        Args:
            sample: (B, in_channels, H, W) x_t in about [-1, 1] (stage II: cat of x_t and the noised
                upsampled stage-I image, see stage2_condition); H, W divisible by 2^(number of blocks - 1).
            timestep: an int t in [0, 999], or a (B,) tensor.
            encoder_hidden_states: (B, L, encoder_hid_dim) the raw T5 output (L = 77, 4096 for IF).
            class_labels: stage II only, (B,) int noise level of the conditioning image (250 by default).
        Returns:
            (B, out_channels, H, W) in sample's dtype: channels 0-2 eps_hat, 3-5 v_hat.
        """
        factor = 2 ** (len(self.down_blocks) - 1)
        if sample.shape[-2] % factor or sample.shape[-1] % factor:
            raise ValueError(f"image size {tuple(sample.shape[-2:])} must be divisible by {factor} for this UNet")
        emb = self.embed(sample, timestep, encoder_hidden_states, class_labels)                # (B, E)
        text = self.encoder_hid_proj(encoder_hidden_states)                                   # (B, L, D)
        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, emb, text)
            skips += block_skips
        h = self.mid_block(h, emb, text)
        for block in self.up_blocks:
            h = block(h, skips, emb, text)
        return self.conv_out(F.gelu(self.conv_norm_out(h)))


# ----------------------------------------------------------------------------------------------------------
# Stage II conditioning (IF super-resolution, DESIGN §5)

STAGE2_NOISE_LEVEL = 250  # IF's default noise level for the upsampled stage-I image


def stage2_condition(low_res: torch.Tensor, size: tuple[int, int], schedule, noise_level: int = STAGE2_NOISE_LEVEL,
                     eps: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """Upsample the stage-I image (bilinear, align_corners=True) and noise it to `noise_level` [A.1]
    with the image-noising schedule (IF: NoiseSchedule.cosine(), passed in by the caller).

    Args:
        low_res: (B, 3, h, w) stage-I images in [-1, 1].
        size: (H, W) of stage II, e.g. (256, 256).
        schedule: anything with add_noise(x0, t, eps), e.g. minidiff.schedule.NoiseSchedule.cosine().
        eps: optional (B, 3, H, W) noise; drawn with `generator` when None.
    Returns:
        (cond, class_labels): cond (B, 3, H, W) in low_res's dtype, class_labels (B,) int64 noise levels.
    """
    up = F.interpolate(low_res, size=size, mode="bilinear", align_corners=True)    # (B, 3, H, W)
    if eps is None:
        eps = torch.randn(up.shape, generator=generator, device=up.device, dtype=up.dtype)
    cond = schedule.add_noise(up, noise_level, eps)
    return cond, torch.full((up.shape[0],), noise_level, dtype=torch.int64, device=up.device)


def stage2_input(x_t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The stage II UNet's input: cat([x_t, cond], channels), (B, 3, H, W) x2 -> (B, 6, H, W)."""
    return torch.cat([x_t, cond], dim=1)
