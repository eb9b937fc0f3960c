"""The GPU check: `python tools/gpu_check.py [--json FILE]`, one script for a machine with one CUDA GPU (under 10
minutes on an A100-class GPU), whose JSON fills the README's GPU table. On a CPU it runs the same code on tiny
configs and skips what needs CUDA (CI runs it so, to keep it working).

1. unet: IF-I-XL and IF-II-L at full size (the published configs in tests/fixtures/deepfloyd) with random
   weights, fp16 on CUDA: our IFUNet against diffusers' UNet2DConditionModel on the same weights and inputs
   (max |difference| relative to the output's scale), the forward's time for each, and the peak memory.
2. t5: T5 v1.1 XXL with random weights: bf16, and the fp16 path (wo in float32), each against float32.
3. part0: Part 0 end to end at 5 steps through the code the stage runs (a0_sampling): stage I and II written as
   fp16 safetensors folders, prompt embeddings in a prompt cache (random: no T5 needed), its wall time.
4. part_b: the Part B report profile's three trainings (b1_2_1, b2_2, b2_4) with their wall times (CPU: one
   tiny epoch each).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "stages")]   # run from a checkout without installing

from minidiff import prompts  # noqa: E402
from minidiff.t5 import T5Config, T5Encoder  # noqa: E402
from minidiff.unet_if import IFUNet, IFUNetConfig  # noqa: E402

CONFIGS = REPO / "tests" / "fixtures" / "deepfloyd"        # the Hub repos' config.json files
TINY_UNET = dict(block_out_channels=[32, 32, 64], layers_per_block=1, attention_head_dim=16, cross_attention_dim=64,
                 encoder_hid_dim=32, addition_embed_type_num_heads=4, time_embedding_dim=64,
                 down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"],
                 up_block_types=["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"])
TINY_T5 = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4)


def unet_config(name: str, full: bool) -> dict:
    d = json.loads((CONFIGS / f"{name}.unet.config.json").read_text())
    return d if full else {**d, **TINY_UNET, "sample_size": 16 if "IF-I-" in name else 32}


def random_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere, norms included, scaled by fan-in (default inits leave zeros that hide bugs)."""
    g = torch.Generator(model.parameters().__next__().device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            std = 0.1 if p.dim() <= 1 else 1.0 / math.sqrt(p[0].numel())
            p.copy_(base + std * torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32))
    return model.eval()


def timed(fn, dev: torch.device, repeats: int = 3) -> tuple[object, float]:
    """(fn's output, its best time in seconds over `repeats` runs after one warm-up)."""
    out, best = fn(), float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return out, best


def peak_gb(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / 1e9, 2) if dev.type == "cuda" else None


def check_unets(dev: torch.device, dtype: torch.dtype, full: bool) -> list[dict]:
    import diffusers
    rows = []
    for name in ("IF-I-XL-v1.0", "IF-II-L-v1.0"):
        d = unet_config(name, full)
        config = IFUNetConfig.from_dict(d)
        with torch.device(dev):
            ours = random_(IFUNet(config), 0).to(dtype)
        params = sum(p.numel() for p in ours.parameters())
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        g = torch.Generator(dev).manual_seed(1)
        S = config.sample_size
        x = torch.randn(2, config.in_channels, S, S, generator=g, device=dev).to(dtype)     # a CFG pair
        text = (3 * torch.randn(2, 77, config.encoder_hid_dim, generator=g, device=dev)).to(dtype)
        t = torch.tensor([500, 500], device=dev)
        labels = torch.tensor([250, 250], device=dev) if config.class_embed_type == "timestep" else None
        with torch.inference_mode():
            out, ours_s = timed(lambda: ours(x, t, text, labels), dev)
        ours_peak = peak_gb(dev)
        theirs = diffusers.UNet2DConditionModel.from_config({k: v for k, v in d.items() if not k.startswith("_")})
        theirs.load_state_dict(ours.state_dict(), strict=True)
        del ours
        theirs = theirs.to(dev, dtype).eval()
        with torch.inference_mode():
            ref, theirs_s = timed(lambda: theirs(x, t, encoder_hidden_states=text, class_labels=labels).sample, dev)
        del theirs
        rows.append({"model": name, "params_B": round(params / 1e9, 3), "dtype": str(dtype), "batch": 2, "size": S,
                     "max_abs_diff_rel": float((out.float() - ref.float()).abs().max() / ref.float().abs().max()),
                     "ours_ms": round(1e3 * ours_s, 1), "diffusers_ms": round(1e3 * theirs_s, 1),
                     "speed_ratio": round(ours_s / theirs_s, 3), "ours_peak_gb": ours_peak})
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def check_t5(dev: torch.device, full: bool) -> dict:
    """bf16 and the fp16 path (hub.load_text_encoder(dtype=float16): wo kept in float32) against float32."""
    config = T5Config(**({} if full else TINY_T5))
    with torch.device(dev):
        model = random_(T5Encoder(config), 0)                                       # float32
    ids = torch.randint(3, config.vocab_size, (2, 77), generator=torch.Generator().manual_seed(0)).to(dev)
    mask = (torch.arange(77, device=dev) < torch.tensor([[12], [77]], device=dev)).long()
    result = {"d_model": config.d_model, "layers": config.num_layers}
    with torch.inference_mode():
        ref = model(ids, mask)
        weights = {n: p.cpu() for n, p in model.state_dict().items()}             # float32, kept for each cast
        for name, dtype in (("bf16", torch.bfloat16), ("fp16_wo_fp32", torch.float16)):
            model.float().load_state_dict(weights)
            model.to(dtype)
            if dtype == torch.float16:                                             # as hub.load_text_encoder reads
                for n, p in model.named_parameters():
                    if n.endswith(".wo.weight"):
                        p.data = weights[n].to(dev)
            out = model(ids, mask).float()
            result[f"{name}_rel_error"] = float((out - ref).norm() / ref.norm())
            result[f"{name}_finite"] = bool(torch.isfinite(out).all())
    result["peak_gb"] = peak_gb(dev)
    return result


def check_part0(dev: torch.device, full: bool, root: Path) -> dict:
    """a0_sampling at 5 steps on random IF folders (fp16 safetensors, as on the Hub) and a random prompt cache."""
    from safetensors.torch import save_file
    folders = {}
    for name in ("IF-I-XL-v1.0", "IF-II-L-v1.0"):
        d = unet_config(name, full)
        with torch.device(dev):
            model = random_(IFUNet(IFUNetConfig.from_dict(d)), 0)
        folder = root / name
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "config.json").write_text(json.dumps(d))
        save_file({k: v.half().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
        del model
        folders[name] = folder
    width = json.loads((folders["IF-I-XL-v1.0"] / "unet" / "config.json").read_text())["encoder_hid_dim"]
    stage = importlib.import_module("a0_sampling")
    g = torch.Generator().manual_seed(0)
    cache = root / "prompt_embeds.safetensors"
    prompts.write_cache(cache, {prompts.cache_key(p, str(folders["IF-I-XL-v1.0"])): torch.randn(77, width, generator=g)
                                for p in [*stage.PROMPTS, ""]})
    os.environ[prompts.CACHE_ENV] = str(cache)
    start = time.perf_counter()
    rec = stage.main(["--backbone", "deepfloyd", "--model", str(folders["IF-I-XL-v1.0"]), "--stage2",
                      str(folders["IF-II-L-v1.0"]), "--device", str(dev), "--steps", "5", "--out", str(root / "out")])
    samples = torch.load(rec.out / "samples.pt")
    return {"steps": 5, "seconds": round(time.perf_counter() - start, 1), "images": list(samples["images"].shape),
            "finite": bool(torch.isfinite(samples["images"]).all()), "notes": rec.notes}


def check_part_b(dev: torch.device, full: bool, root: Path) -> list[dict]:
    rows = []
    for stage in ("b1_2_1_train_denoiser", "b2_2_train_time_conditioned", "b2_4_train_class_conditioned"):
        argv = ["--device", str(dev), "--out", str(root / "part_b")]
        if not full:
            argv += ["--epochs", "1", "--num-hiddens", "8", "--images", "512"]
        start = time.perf_counter()
        rec = importlib.import_module(stage).main(argv)
        rows.append({"stage": stage, "profile": "report" if full else "tiny (CPU)", "minutes":
                     round((time.perf_counter() - start) / 60, 2), "notes": rec.notes})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=REPO / "outputs" / "gpu_check.json")
    p.add_argument("--skip-part-b", action="store_true", help="leave out the Part B trainings")
    args = p.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    full = dev.type == "cuda"
    result = {"device": torch.cuda.get_device_name(dev) if full else "cpu (tiny configs: a smoke run)",
              "torch": torch.__version__, "full_size": full}
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in (("unet", lambda: check_unets(dev, torch.float16 if full else torch.float32, full)),
                            ("t5", lambda: check_t5(dev, full)),
                            ("part0", lambda: check_part0(dev, full, Path(tmp) / "part0")),
                            ("part_b", lambda: check_part_b(dev, full, Path(tmp)))):
            if name == "part_b" and args.skip_part_b:
                continue
            start = time.perf_counter()
            result[name] = check()
            print(f"{name}: {time.perf_counter() - start:.1f} s: {json.dumps(result[name])[:300]}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
