"""The DeepFloyd IF backbone (minidiff/backbone.py): stage I (64 px) samples, stage II (256 px) upsamples.

IF (DeepFloyd 2023) is a pixel-space cascade: stage I makes a 64x64 image from a T5 prompt embedding, stage II
(super-resolution) makes a 256x256 image from the same prompt and the stage-I image. Both are our own IFUNet
(minidiff/unet_if.py) with the published weights (minidiff/hub.py); prompts go through the prompt-embedding
cache (minidiff/prompts.py), so T5 XXL is loaded only for prompts it has never seen.

    backbone = DeepFloydBackbone.from_pretrained("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0",
                                                 device="cuda", dtype=torch.float16)
    cond = backbone.embed(["a rocket ship"])                      # (1, 77, 4096) float32
    eps_hat, v_hat = backbone.model_fn(x_t, 990, cond)           # stage I: output channels 0-2, 3-5
    x256 = backbone.upsample(x64, ["a rocket ship"])              # stage II, CFG gamma = 4

Memory (minidiff.memory): the backbone keeps what fits. Below that (IF-I-XL + IF-II-L on 16 GB or less) one
network is in memory at a time: stage I is loaded at construction; `upsample` frees it, loads stage II, samples,
frees stage II, and the next `model_fn` reloads stage I (from the OS file cache: seconds). On 24 GB and more
both UNets stay; T5 XXL (4.8 B, 9.5 GB in bf16) joins them only where all three fit (40 GB and more), else the
UNets are freed before a prompt goes through T5. one_unet_at_a_time=True / False forces either.

Every shape is read from the downloaded config.json (IF-I-M/L/XL, IF-II-M/L): image_shape is stage I's
`sample_size`, the upsampled size stage II's.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from . import data, guidance, hub, memory
from .prompts import REPORT_PROMPTS, PromptCacheError, encode_prompts, missing_prompts, text_encoder_of
from .sampling import iterative_denoise, strided_timesteps
from .schedule import NoiseSchedule
from .t5 import T5Config, T5Encoder
from .unet_if import STAGE2_NOISE_LEVEL, IFUNet, IFUNetConfig, stage2_condition, stage2_input

STAGE1_SOURCE = "DeepFloyd/IF-I-XL-v1.0"
STAGE2_SOURCE = "DeepFloyd/IF-II-L-v1.0"
START, STRIDE = 990, 30              # report 5A §1.4: strided_timesteps(990, 30) = [990, 960, ..., 0], 34 entries
STAGE2_GUIDANCE = 4.0                # CFG scale of IF's super-resolution pipeline (diffusers' default for stage II)
STAGE2_STEPS = 50                    # its default num_inference_steps: t = 980, 960, ..., 0 (pipeline_timesteps(50))
STAGE2_THRESHOLD = 1.0               # IF-II scheduler: thresholding, sample_max_value 1.0 (= clip to [-1, 1])
TEST_IMAGES = ("rocket", "astronaut", "chelsea")   # photos in data/; rocket.png plays the report's Campanile (§1.1)
UNET_WEIGHTS = ["diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"]
T5_WEIGHTS = ["model.safetensors.index.fp16.json", "model.fp16.safetensors", "model.safetensors.index.json",
              "model.safetensors"]


def pipeline_timesteps(num_inference_steps: int, num_train_steps: int = 1000) -> list[int]:
    """The timesteps of IF's diffusers pipelines for `num_inference_steps` = N (DDPMScheduler, "leading" spacing):
    the model runs at t = (N-1)s, ..., s, 0 with stride s = num_train_steps // N, and the last step, from t = 0,
    lands on the clean image (t' = -1, alpha_bar = 1). Returned as that list + [-1] for iterative_denoise:
    N = 5 -> [800, 600, 400, 200, 0, -1]; N = 10 -> [900, 800, ..., 0, -1]; N = 20 -> [950, 900, ..., 0, -1]."""
    if not 1 <= num_inference_steps <= num_train_steps:
        raise ValueError(f"num_inference_steps must be in [1, {num_train_steps}], got {num_inference_steps}")
    stride = num_train_steps // num_inference_steps
    return [i * stride for i in range(num_inference_steps - 1, -1, -1)] + [-1]


class DeepFloydBackbone:
    """DeepFloyd IF behind the Part A interface (backbone.Backbone): stage I is the denoiser, stage II `upsample`.

    Images live in [-1, 1]. Prompt embeddings are T5(prompt) from the prompt cache, keyed by the text encoder's
    source (prompts.text_encoder_of: the T5 all IF stage-I repos share, or a local folder's own); "" is the
    unconditional prompt. Build it with
    `from_pretrained`; every argument of __init__ is documented there.
    """

    name = "deepfloyd"
    domain = "photos"
    image_range = (-1.0, 1.0)

    def __init__(self, source: str | os.PathLike = STAGE1_SOURCE, stage2_source: str | os.PathLike = STAGE2_SOURCE,
                 *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 revision: Optional[str] = None, stage2_revision: Optional[str] = None,
                 prompt_cache: str | os.PathLike | None = None, t5_dtype: torch.dtype = torch.bfloat16,
                 one_unet_at_a_time: bool | None = None, text_encoder: str | os.PathLike | None = None):
        self.source, self.stage2_source = str(source), str(stage2_source)
        self.revision, self.stage2_revision = revision, stage2_revision
        self.t5_source, self.t5_revision = ((str(text_encoder), None) if text_encoder is not None
                                            else text_encoder_of(self.source, revision))
        self.device, self.dtype = torch.device(device), dtype
        self.prompt_cache = prompt_cache
        self.t5_dtype = t5_dtype
        self.one_unet_at_a_time, self.t5_beside_unets = bool(one_unet_at_a_time), False
        self.schedule = NoiseSchedule.cosine(1000)               # IF's squaredcos_cap_v2, T = 1000 (DESIGN §5)
        self.timesteps = strided_timesteps(START, STRIDE)       # [990, 960, ..., 0]
        self._unets: dict[str, IFUNet] = {}                     # "I" / "II" -> the loaded UNet
        config = self.stage1().config                           # load now: fail early, read the shapes
        self.text_dim = config.encoder_hid_dim
        self.image_shape = (3, config.sample_size, config.sample_size)
        self.memory_note = ""
        if one_unet_at_a_time is None:                          # what fits on this device (minidiff.memory)
            plan = self._memory_plan()
            self.one_unet_at_a_time, self.t5_beside_unets = not plan.keep_unets, plan.t5_beside_unets
            self.memory_note = plan.note

    def _memory_plan(self) -> memory.MemoryPlan:
        """The plan from the UNets' sizes in self.dtype (stage II's from its config.json) and T5 XXL's in t5_dtype
        (float16 keeps its 1.0 B `wo` parameters in float32)."""
        def size(module_class, config, dtype, fp32_suffix=None):
            with torch.device("meta"):
                params = list(module_class(config).named_parameters())
            return sum(p.numel() * (4 if fp32_suffix and n.endswith(fp32_suffix) else dtype.itemsize)
                       for n, p in params)
        stage2 = hub.load_config(self.stage2_source, IFUNetConfig, "unet", self.stage2_revision)
        loaded = sum(p.numel() * p.element_size() for p in self.stage1().parameters())   # stage I is in memory
        unets = (loaded, size(IFUNet, stage2, self.dtype))
        t5 = size(T5Encoder, T5Config(), self.t5_dtype, "wo.weight" if self.t5_dtype == torch.float16 else None)
        return memory.memory_plan(memory.device_bytes(self.device), unets, t5)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = STAGE1_SOURCE,
                        stage2_source: str | os.PathLike = STAGE2_SOURCE, **kwargs) -> "DeepFloydBackbone":
        """Load stage I now (stage II on the first `upsample`).

        Args:
            source: stage I, a Hub repo id (IF-I-M/L/XL-v1.0) or a local folder laid out like one.
            text_encoder: where T5 (text_encoder/, tokenizer/) comes from, for the prompts missing from the cache
                (None: prompts.text_encoder_of(source): the T5 all IF repos share, or a local folder's own).
            stage2_source: stage II (IF-II-M/L-v1.0) repo id or folder.
            device, dtype: of the UNets (stages pick float16 on CUDA, float32 on the CPU); the fp16 weight files
                are read and cast as they load.
            revision, stage2_revision: Hub branch, tag or commit (None: main); `revision` is part of the cache key.
            prompt_cache: the prompt-embedding cache file (default: minidiff.prompts.default_cache_path()).
            t5_dtype: what T5 runs in for uncached prompts, on `device`: bfloat16, float32, or float16 for GPUs
                without bf16 (its feed-forward output projections stay float32: hub.load_text_encoder).
            one_unet_at_a_time: free each network before loading the next (True), keep both UNets (False), or
                None: what fits on the device (minidiff.memory.memory_plan; `memory_note` says what it chose).
        Raises:
            hub.LoadError (one line, with the fix): gated repo, not logged in, offline and not cached, bad folder.
        """
        return cls(source, stage2_source, **kwargs)

    # --- networks, loaded one at a time ---------------------------------------------------------------------

    def stage1(self) -> IFUNet:
        return self._unet("I")

    def stage2(self) -> IFUNet:
        return self._unet("II")

    def _unet(self, stage: str) -> IFUNet:
        if stage not in self._unets:
            if self.one_unet_at_a_time:
                self.release()
            source, revision = (self.source, self.revision) if stage == "I" else (self.stage2_source,
                                                                                 self.stage2_revision)
            unet = hub.load_unet(source, "unet", variant="fp16", dtype=self.dtype, device=self.device,
                                 revision=revision)
            is_stage2 = unet.config.class_embed_type == "timestep"
            if is_stage2 != (stage == "II") or unet.config.in_channels != (6 if is_stage2 else 3):
                want, flag = ("stage I (IF-I-M/L/XL)", "--model") if stage == "I" else ("stage II (IF-II-M/L)",
                                                                                        "--stage2")
                raise ValueError(f"{source} holds a {'stage II' if is_stage2 else 'stage I'} UNet where a {want} "
                                 f"one is needed: pass a {want} repo id or folder ({flag})")
            self._unets[stage] = unet
        return self._unets[stage]

    def release(self) -> None:
        """Free the loaded UNets (the next model_fn / upsample reloads what it needs)."""
        if not self._unets:
            return
        self._unets.clear()
        gc.collect()                                  # now, not at the next automatic collection
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # --- the Backbone interface ------------------------------------------------------------------------------

    @torch.no_grad()
    def model_fn(self, x_t: torch.Tensor, t: int, cond: torch.Tensor):
        """Stage I: (B, 3, h, w) x_t, int t, (B, 77, d_text) cond -> (eps_hat, v_hat), each (B, 3, h, w) in x_t's
        dtype (output channels 0-2 and 3-5, DESIGN §2); v_hat in about [-1, 1]. A half-precision UNet casts."""
        unet = self.stage1()
        w = unet.conv_in.weight.dtype
        out = unet(x_t.to(w), t, cond.to(x_t.device, w)).to(x_t.dtype)           # (B, 6, h, w)
        return out[:, :3], out[:, 3:6]

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> (N, 77, d_text) float32 T5 embeddings on the device, from the cache (T5 runs only for
        prompts missing from it, after the UNets are freed). "" is the unconditional prompt.
        Raises minidiff.prompts.PromptCacheError (one line) when a prompt is missing and T5 cannot be loaded."""
        if isinstance(prompts, str):
            raise TypeError("embed expects a list of prompts, got a single string")
        prompts = list(prompts)
        if self._unets and not self.t5_beside_unets and missing_prompts(
                prompts, self.t5_source, self.t5_revision, self.prompt_cache):
            self.release()                                       # T5 beside a UNet only where both fit
        cond = encode_prompts(prompts, self.t5_source, revision=self.t5_revision, cache_path=self.prompt_cache,
                              dtype=self.t5_dtype, device=self.device)      # (N, 77, d_text) on the CPU
        if cond.shape[-1] != self.text_dim:
            raise ValueError(f"the prompt embeddings of {self.t5_source} are {cond.shape[-1]} wide but its UNet reads "
                             f"{self.text_dim}: the text_encoder/ and unet/ folders come from different models")
        return cond.to(self.device)

    def load_image(self, path: Path | str) -> torch.Tensor:
        """A photo or drawing as (1, 3, h, w) float32 in [-1, 1] on the device (h = w = stage I's sample_size)."""
        return data.to_signed(data.load_image(path, self.image_shape[-1])).to(self.device)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1], clamped."""
        return data.to_unit(x)

    def test_images(self) -> list[tuple[str, torch.Tensor]]:
        """The photos of §1.1-§1.7: data/rocket.png (our stand-in for the report's Campanile, §1.1's "test
        image"), data/astronaut.png, data/chelsea.png; each (1, 3, h, w) in [-1, 1]."""
        return [(name, self.load_image(data.DATA_DIR / f"{name}.png")) for name in TEST_IMAGES]

    @torch.no_grad()
    def upsample(self, x: torch.Tensor, prompts: Sequence[str], num_inference_steps: int = STAGE2_STEPS,
                 guidance_scale: float = STAGE2_GUIDANCE, generator: Optional[torch.Generator] = None,
                 guide: Optional[Callable] = None, noise_level: int = STAGE2_NOISE_LEVEL) -> torch.Tensor:
        """Stage II super-resolution of stage-I images (IF's super-resolution pipeline):

        the stage-I image, bilinearly upsampled and noised to `noise_level` (250) [A.1] with the image-noising
        schedule (the same cosine one), is concatenated to x_t as 3 more input channels; the noise level is the
        UNet's class label. A sample from pure noise then runs the pipeline's strided steps (pipeline_timesteps),
        with CFG [A.4] against "" (Ho & Salimans 2022) and x0_hat clipped to [-1, 1] (IF-II's thresholding).

        An illusion keeps its guidance through stage II (Geng et al. 2024's code: the same views or frequency
        split, both prompts, noise level 50): `guide(model_fn, size) -> eps_fn` builds the estimator from stage
        II's model_fn as stage I's was built from stage I's (guidance.anagram, guidance.hybrid). Its input is
        cat(x_t, conditioning image), 6 channels: a view then turns the conditioning image with x_t, as it must
        (the flipped reading is decided on the flipped low-resolution image too).

        Args:
            x: (B, 3, h, w) stage-I images, about [-1, 1] (stage I's thresholding allows up to 1.5: passed on as
                they are, as the super-resolution pipeline does).
            prompts: B prompts, one per image (CFG's, when guide is None).
            num_inference_steps, guidance_scale: the pipeline's 50 steps and CFG gamma = 4 by default.
            generator: seeds the noise (on x's device); None uses the global RNG.
            guide: None (CFG on `prompts`), or guide(model_fn, S) with model_fn((kB, 6, S, S), t, c) ->
                (eps_hat, v_hat) (k: any number of batched branches) and S the output size; embed its prompts
                before calling upsample (T5 and a UNet are never in memory together).
            noise_level: of the conditioning image: 250 (the pipeline's), 50 for illusions.
        Returns:
            (B, 3, H, W) in [-1, 1], x's dtype and device; H = W = stage II's sample_size (256 for IF-II).
        """
        B = x.shape[0]
        if len(prompts) != B:
            raise ValueError(f"upsample needs one prompt per image: got {len(prompts)} prompts for {B} images")
        if guide is None:
            embeds = self.embed([*prompts, ""])                  # one T5 load for whatever is not cached
            cond, uncond = embeds[:B], embeds[B:]
        unet = self.stage2()
        S, w = unet.config.sample_size, unet.conv_in.weight.dtype
        # The draws in IFSuperResolutionPipeline's order (the course notebook passes one generator through both
        # stages, so the order decides the image): the initial noise x_T first, then the conditioning image's noise.
        x_T = torch.randn((B, 3, S, S), generator=generator, device=x.device, dtype=x.dtype)
        low_res, level = stage2_condition(x, (S, S), self.schedule, noise_level,
                                          generator=generator)                   # (B, 3, S, S), (B,)

        def model_fn(x_in: torch.Tensor, t: int, c: torch.Tensor):
            k = x_in.shape[0] // B                                                # branches batched by the guide
            out = unet(x_in.to(w), t, c.to(x_in.device, w), level.repeat(k)).to(x_in.dtype)   # (kB, 6, S, S)
            return out[:, :3], out[:, 3:6]

        combined = (guide(model_fn, S) if guide is not None
                    else guidance.cfg(model_fn, cond, uncond, guidance_scale))

        def eps_fn(x_t: torch.Tensor, t: int):
            return combined(stage2_input(x_t, low_res), t)                         # (B, 6, S, S) in

        y = iterative_denoise(eps_fn, self.schedule, x_T, pipeline_timesteps(num_inference_steps),
                              generator=generator, threshold=STAGE2_THRESHOLD)
        if self.one_unet_at_a_time:
            self.release()
        return y.clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Is IF usable here without downloading anything? (for `--backbone auto`: looks at files only, loads nothing)
# ---------------------------------------------------------------------------------------------------------------

def unavailable_reason(source: str = STAGE1_SOURCE, stage2_source: str = STAGE2_SOURCE,
                       revision: Optional[str] = None, stage2_revision: Optional[str] = None,
                       needed_prompts: Sequence[str] = REPORT_PROMPTS,
                       cache_path: str | os.PathLike | None = None) -> Optional[str]:
    """None when DeepFloyd IF can run offline: both UNets' config and weights are in the local folders or the
    Hub cache, and `needed_prompts` are in the prompt cache or T5 is there too. Otherwise a one-line reason
    with the fix. Cheap: reads no weights and never touches the network."""
    for what, src, rev in (("stage I", str(source), revision), ("stage II", str(stage2_source), stage2_revision)):
        if not (hub.is_available(src, "unet", ["config.json"], rev)
                and hub.is_available(src, "unet", UNET_WEIGHTS, rev)):
            return (f"{what} weights {src} are not downloaded (accept the license on "
                    f"{hub.IF_LICENSE_CARD}, log in with `hf auth login`, then run with --backbone deepfloyd)")
    t5, t5_revision = text_encoder_of(str(source), revision)
    try:
        missing = missing_prompts(list(needed_prompts), t5, t5_revision, cache_path)
    except PromptCacheError as e:
        return str(e)
    t5_there = (hub.is_available(t5, "text_encoder", ["config.json"], t5_revision)
                and hub.is_available(t5, "text_encoder", T5_WEIGHTS, t5_revision)
                and hub.is_available(t5, "tokenizer", ["spiece.model"], t5_revision))
    if missing and not t5_there:
        return (f"{len(missing)} prompt embedding(s) (e.g. {missing[0]!r}) are not cached and T5 is not downloaded "
                f"(run `python -m minidiff.prompts` where the weights are)")
    return None
