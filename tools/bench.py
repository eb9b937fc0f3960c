"""Benchmarks: `python tools/bench.py [train|lanes|sample|unet|load|all] [--json FILE]` (`make bench` runs all).

Each benchmark is a function returning a list of row dicts, listed in BENCHES at the end; `all` runs every one.
The rows are printed as a table and, with --json, written to a file. The figures live in the README, measured.

- train: Part B training images/s and GFLOP/s per model, as a fraction of a conv2d microbenchmark of the same
  shapes run in the same process; then the class model with channels_last, bf16 autocast and torch.compile.
- lanes: the quick profile's class model (D = 16, batch 64; bf16 and NHWC where the CPU computes bf16) trained in
  one process on every thread, then in two processes side by side on half of them each (run_all --jobs 2):
  images/s of each, and of the two together.
- sample: Part B DDPM sampling (300 steps, CFG) and the Part A loop (CFG, 2-view anagram) per image on the
  MNIST backbone and on a mid-size random IF-shaped UNet; the quick profile's D = 16 model in float32 and in
  bfloat16 (how --quick samples where the CPU computes bf16).
- unet: our IF UNet forward vs diffusers' UNet2DConditionModel (when installed; a test-only oracle that the
  package never imports: it is loaded here at run time only) on the same random weights, a mid-size
  IF-shaped config, batch 2 (a CFG pair) at 64x64 with a (2, 77, 4096) prompt. Target: ratio <= 1.0
  (ratio of the best of a few interleaved runs each).
- load: peak resident memory of a fresh process loading a ~1 GB fp16 safetensors UNet with
  minidiff.hub.load_unet (then reading every weight once, as a first forward would). Target: the memory
  the load adds is <= 1.3x the file size.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS.parent / "stages")]  # run from a checkout without installing

import common  # noqa: E402  (stages/common.py: where the CPU computes bf16)
from minidiff.schedule import NoiseSchedule  # noqa: E402
from minidiff.unet_if import IFUNet, IFUNetConfig  # noqa: E402

# Mid-size IF-shaped UNet: stage I block types, 64 px, a 4096-wide prompt; 70 M parameters (IF-I-XL: 4.3 B).
UNET_BENCH_CONFIG = IFUNetConfig(block_out_channels=(64, 128, 192, 256), layers_per_block=(2, 2, 2, 2),
                                 cross_attention_dim=256)
# ~1 GB in fp16 (491 M parameters).
LOAD_BENCH_CONFIG = IFUNetConfig(block_out_channels=(256, 512, 768, 1024), layers_per_block=(2, 2, 2, 2),
                                 cross_attention_dim=1024)


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_unet(repeats: int = 4) -> list[dict]:
    config = UNET_BENCH_CONFIG
    torch.manual_seed(0)
    ours = IFUNet(config).eval()
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, config.in_channels, 64, 64, generator=g)
    text = torch.randn(2, 77, config.encoder_hid_dim, generator=g)
    t = torch.tensor([500, 500])
    runs = {"minidiff": lambda: ours(x_t, t, text)}
    if importlib.util.find_spec("diffusers") is not None:
        diffusers = importlib.import_module("diffusers")
        cfg = {k: v for k, v in config.to_dict().items() if not k.startswith("_")}
        theirs = diffusers.UNet2DConditionModel(**cfg).eval()
        theirs.load_state_dict(ours.state_dict(), strict=True)
        runs["diffusers"] = lambda: theirs(x_t, t, encoder_hidden_states=text).sample
    times = {name: [] for name in runs}
    with torch.inference_mode():
        outs = {name: fn() for name, fn in runs.items()}  # warm-up, and the outputs must agree
        for i in range(repeats):  # interleaved (alternating who goes first), so both see the same machine load
            for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                times[name].append(_seconds(runs[name]))
    n_params = sum(p.numel() for p in ours.parameters())
    rows = [{"bench": "unet", "impl": name, "params_M": round(n_params / 1e6, 1), "batch": 2, "size": 64,
             "threads": torch.get_num_threads(), "median_ms": round(1e3 * statistics.median(ts), 1),
             "min_ms": round(1e3 * min(ts), 1)} for name, ts in times.items()]
    if "diffusers" in times:
        # the ratio of best times is the robust one on a shared machine (timeit's advice); median for reference
        rows[0]["ratio_vs_diffusers"] = round(min(times["minidiff"]) / min(times["diffusers"]), 3)
        rows[0]["ratio_median"] = round(statistics.median(times["minidiff"]) / statistics.median(times["diffusers"]), 3)
        rows[0]["max_abs_diff"] = float((outs["minidiff"] - outs["diffusers"]).abs().max())
    return rows


def _load_child(folder: str, dtype: str) -> None:
    """Run in a fresh process: print JSON with the peak RSS before loading and after.

    The peak is read from /proc/self/status (VmHWM, the high-water mark of this process's own memory map):
    getrusage's ru_maxrss would also count the parent's memory at fork time, which Linux carries over exec.
    """
    from minidiff.hub import load_unet

    def max_rss_mb() -> float:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB -> MiB

    baseline = max_rss_mb()
    t0 = time.perf_counter()
    model = load_unet(folder, dtype=getattr(torch, dtype))
    seconds = time.perf_counter() - t0
    for p in model.parameters():  # read every weight once, as the first forward would
        p.max()
    print(json.dumps({"baseline_mb": baseline, "peak_mb": max_rss_mb(), "load_s": seconds}))


def bench_load() -> list[dict]:
    from safetensors.torch import save_file

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "unet").mkdir()
        (folder / "unet" / "config.json").write_text(json.dumps(LOAD_BENCH_CONFIG.to_dict()))
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in IFUNet(LOAD_BENCH_CONFIG).state_dict().items()}
        g = torch.Generator().manual_seed(0)
        weights = {k: torch.empty(s, dtype=torch.float16).normal_(generator=g) for k, s in shapes.items()}
        path = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
        save_file(weights, path)
        del weights
        file_mb = path.stat().st_size / 2**20
        for dtype in ("float16", "float32"):
            code = (f"import sys; sys.path.insert(0, {str(TOOLS)!r}); from bench import _load_child; "
                    f"_load_child({str(folder)!r}, {dtype!r})")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TOOLS.parent)
            if out.returncode != 0:
                raise RuntimeError(f"the loading process failed: {out.stderr.strip().splitlines()[-1]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            added = r["peak_mb"] - r["baseline_mb"]
            result_mb = file_mb * (2 if dtype == "float32" else 1)
            rows.append({"bench": "load", "file": "fp16 safetensors", "dtype": dtype, "file_mb": round(file_mb),
                         "baseline_rss_mb": round(r["baseline_mb"]), "peak_rss_mb": round(r["peak_mb"]),
                         "added_mb": round(added), "added_over_file": round(added / file_mb, 2),
                         "added_over_result": round(added / result_mb, 2), "load_s": round(r["load_s"], 2)})
    return rows


def _flops(fn) -> int:
    """FLOPs (2 per multiply-add) that torch's FlopCounterMode counts while running fn once."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _best_seconds(fn, repeats: int, budget_s: float = 20.0) -> float:
    """The best of up to `repeats` timed runs after a warm-up (oneDNN builds its kernels there), stopping early
    once the timed runs took `budget_s` (a slow path such as bf16 without bf16 hardware is timed once)."""
    fn()
    times = []
    while len(times) < repeats and sum(times) < budget_s:
        times.append(_seconds(fn))
    return min(times)


def _conv_microbench(model: torch.nn.Module, inputs: tuple, repeats: int) -> tuple[float, float]:
    """The machine's conv throughput on the model's own conv shapes: every Conv2d/ConvTranspose2d of the model
    run alone, forward + backward, at the shapes it sees in training. Returns (GFLOP per pass, seconds)."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape)))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model(*inputs)
    for h in hooks:
        h.remove()
    flops, seconds = 0, 0.0
    for conv, shape in shapes:
        x1 = torch.randn((1, *shape[1:]), requires_grad=True)
        flops += _flops(lambda: conv(x1).sum().backward()) * shape[0]    # FLOPs are linear in the batch
        x = torch.randn(shape, requires_grad=True)
        seconds += _best_seconds(lambda: conv(x).sum().backward(), repeats)
    return flops / 1e9, seconds


def _train_step(cfg, channels_last: bool = False, compile: bool = False):
    """One optimizer step of `cfg`'s model on a fixed random batch, run as minidiff.train runs it.
    Returns (step(n=batch) -> None, model, inputs of one forward)."""
    from minidiff.mnist_unet import MNISTUNet
    from minidiff.train import batch_loss

    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = MNISTUNet(cfg.model_config()).to(memory_format=layout)
    forward = torch.compile(model) if compile else model
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    B = cfg.batch_size
    x0, y = torch.rand(B, 1, 28, 28).contiguous(memory_format=layout), torch.randint(0, 10, (B,))

    def step(n=B):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = batch_loss(forward, cfg, x0[:n], y[:n], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    t = torch.rand(B) if cfg.kind != "denoiser" else None
    c = torch.eye(10)[y] if cfg.kind == "class" else None
    return step, model, tuple(a for a in (x0, t, c) if a is not None)


def bench_train(repeats: int = 3) -> list[dict]:
    """Part B training throughput of the report's three models at the report's batch sizes, and their GFLOP/s as
    a fraction of the conv microbenchmark of the same shapes (issue 7 aims at >= 0.6). Then the class model with
    each speed option of minidiff.train: channels_last, bf16 autocast (--bf16), torch.compile (its compile time
    is the first step's)."""
    from minidiff.train import TrainConfig

    rows = []
    plain = (TrainConfig.denoiser(), TrainConfig.time_conditioned(), TrainConfig.class_conditioned())
    variants = [(TrainConfig.class_conditioned(), "channels_last", dict(channels_last=True)),
                (TrainConfig.class_conditioned(bf16=True), "bf16 autocast", {}),
                (TrainConfig.class_conditioned(), "torch.compile", dict(compile=True))]
    conv_rate = {}
    for cfg, option, kw in [(c, "fp32", {}) for c in plain] + variants:
        step, model, inputs = _train_step(cfg, **kw)
        B = cfg.batch_size
        compile_s = _seconds(step) if kw.get("compile") else None            # the first step compiles
        gflop = _flops(lambda: _train_step(cfg)[0](1)) * B / 1e9             # eager fp32, one image: FLOPs are
        seconds = _best_seconds(step, repeats)                                # linear in the batch
        if cfg.kind not in conv_rate:                                         # the machine's conv throughput
            conv_gflop, conv_seconds = _conv_microbench(model, inputs, repeats)
            conv_rate[cfg.kind] = conv_gflop / conv_seconds
        achieved = gflop / seconds
        rows.append({"bench": "train", "model": cfg.kind, "option": option, "D": cfg.num_hiddens, "batch": B,
                     "threads": torch.get_num_threads(), "images_per_s": round(B / seconds, 1),
                     "gflop_per_step": round(gflop, 1), "gflop_per_s": round(achieved, 1),
                     "conv_microbench_gflop_per_s": round(conv_rate[cfg.kind], 1),
                     "fraction_of_conv": round(achieved / conv_rate[cfg.kind], 2),
                     "epoch_minutes": round(60000 // B * seconds / 60, 1),
                     **({"compile_s": round(compile_s, 1)} if compile_s is not None else {})})
    return rows


def _quick_class_config():
    """The quick profile's class-conditioned DDPM (D = 16, batch 64), in bf16 where the CPU computes it."""
    from minidiff.train import TrainConfig
    return TrainConfig.class_conditioned(num_hiddens=16, batch_size=64, lr=1e-2,
                                         bf16=common.native_bf16(torch.device("cpu")))


def _lanes_child(threads: int, steps: int) -> None:
    """Run in a fresh process: `steps` training steps of the quick class model on `threads` threads; print JSON with
    the images/s."""
    torch.set_num_threads(threads)
    cfg = _quick_class_config()
    step, _, _ = _train_step(cfg, channels_last=cfg.bf16)
    for _ in range(5):                                       # warm-up: oneDNN builds its kernels
        step()
    print(json.dumps({"images_per_s": steps * cfg.batch_size / _seconds(lambda: [step() for _ in range(steps)])}))


def bench_lanes(steps: int = 150) -> list[dict]:
    """The quick class model's training speed in one process on every thread, then in two processes side by side on
    half of the threads each, as run_all --jobs 2 runs `make demo`'s lanes. Each process is fresh (torch imported
    anew, nothing else running in it)."""
    threads = torch.get_num_threads()

    def side_by_side(n: int) -> list[float]:
        code = (f"import sys; sys.path.insert(0, {str(TOOLS)!r}); from bench import _lanes_child; "
                f"_lanes_child({max(1, threads // n)}, {steps})")
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=TOOLS.parent)
                 for _ in range(n)]
        outs = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError("a training process of the lanes bench failed")
        return [json.loads(out.strip().splitlines()[-1])["images_per_s"] for out in outs]
    rows = []
    for n in (1, 2):
        rates = side_by_side(n)
        rows.append({"bench": "lanes", "processes": n, "threads_each": max(1, threads // n),
                     "images_per_s_each": [round(r) for r in rates], "images_per_s_together": round(sum(rates))})
    rows[1]["speedup"] = round(rows[1]["images_per_s_together"] / rows[0]["images_per_s_together"], 2)
    return rows


def bench_sample() -> list[dict]:
    """Sampling speed: Part B DDPM (300 steps, CFG) on the report's class-conditioned UNet, and the Part A loop
    (34 strided steps, CFG gamma 7, and a 2-view anagram with CFG) on the MNIST backbone and, per step, on the
    mid-size IF-shaped UNet of `bench unet` (extrapolated to 34 steps)."""
    from minidiff import ddpm, guidance
    from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig
    from minidiff.sampling import ddpm_timesteps, iterative_denoise, strided_timesteps

    rows = []
    torch.manual_seed(0)
    mnist = MNISTUNet(MNISTUNetConfig(num_hiddens=64, kind="class")).eval()
    model_fn = ddpm.estimator(mnist)
    sched = ddpm.SCHEDULE
    B = 40
    digits = torch.arange(B) % 10
    cond, uncond = ddpm.one_hot(digits), ddpm.one_hot([-1])
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(B, 1, 28, 28)
    seconds = 10 * _seconds(lambda: ddpm.sample(mnist, x_T, digits, 5.0, g, timesteps=ddpm_timesteps(300)[-31:]))
    rows.append({"bench": "sample", "what": "Part B DDPM, 300 steps (30 timed), CFG", "backbone": "mnist D=64",
                 "batch": B, "seconds": round(seconds, 2), "images_per_s": round(B / seconds, 2)})
    quick, n = MNISTUNet(MNISTUNetConfig(num_hiddens=16, kind="class")).eval(), 200      # --quick's metrics batch
    x_T = torch.randn(n, 1, 28, 28)
    for dtype in (torch.float32, torch.bfloat16):                  # the model's dtype; the loop stays in float32
        model = quick.to(dtype)
        seconds = 10 * _seconds(lambda: ddpm.sample(model, x_T, torch.arange(n) % 10, 5.0, g,
                                                    timesteps=ddpm_timesteps(300)[-31:]))
        rows.append({"bench": "sample", "what": f"Part B DDPM, 300 steps (30 timed), CFG, the model in {dtype}",
                     "backbone": "mnist D=16 (quick)", "batch": n, "seconds": round(seconds, 2),
                     "images_per_s": round(n / seconds, 2)})

    ts = strided_timesteps(290, 10)
    c1, c2 = cond[6:7], cond[9:10]                       # an anagram of "6" upright and "9" flipped
    part_a = [("CFG 7", guidance.cfg(model_fn, c1, uncond, 7.0)),
              ("anagram, 2 views, CFG 7", guidance.anagram(model_fn, [c1, c2], [guidance.identity(),
                                                           guidance.flip_vertical()], uncond, 7.0))]
    for what, eps_fn in part_a:
        x = torch.randn(1, 1, 28, 28)
        s = _seconds(lambda: iterative_denoise(eps_fn, sched, x, ts, generator=g))
        rows.append({"bench": "sample", "what": f"Part A loop, {what}, {len(ts) - 1} steps",
                     "backbone": "mnist D=64", "batch": 1, "seconds": round(s, 2), "images_per_s": round(1 / s, 3)})

    config = UNET_BENCH_CONFIG                            # the IF-shaped UNet: time 2 steps, extrapolate to 34
    unet = IFUNet(config).eval()
    text = torch.randn(2, 77, config.encoder_hid_dim)

    def if_model_fn(x_t, t, c):
        out = unet(x_t, torch.full((x_t.shape[0],), t), c)
        return out[:, :3], out[:, 3:]
    if_ts = strided_timesteps(990, 30)
    x = torch.randn(1, 3, 64, 64)
    for what, eps_fn, views in [("CFG 7", guidance.cfg(if_model_fn, text[:1], text[1:], 7.0), 1),
                                ("anagram, 2 views, CFG 7", guidance.anagram(
                                    if_model_fn, [text[:1], text[:1]], [guidance.identity(), guidance.flip_vertical()],
                                    text[1:], 7.0), 2)]:
        with torch.inference_mode():
            per_step = _seconds(lambda: iterative_denoise(eps_fn, NoiseSchedule.cosine(), x, if_ts[-3:],
                                                          generator=g)) / 2
        rows.append({"bench": "sample", "what": f"Part A loop, {what}, 33 steps (2 timed)",
                     "backbone": f"IF-shaped {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M",
                     "batch": 1, "seconds": round(33 * per_step, 1), "images_per_s": round(1 / (33 * per_step), 4)})
    return rows


# ----------------------------------------------------------------------------------------------------------


def print_table(rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def machine() -> dict:
    """What the figures were measured on: CPU model, cores, threads, torch version, GPU if any."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [l.split(":", 1)[1].strip() for l in cpuinfo.read_text().splitlines()
             if l.startswith("model name")] if cpuinfo.exists() else []
    return {"bench": "machine", "cpu": names[0] if names else platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


BENCHES = {"unet": bench_unet, "load": bench_load, "train": bench_train, "lanes": bench_lanes,   # `all`: this order
           "sample": bench_sample}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="all", choices=[*BENCHES, "all"])
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [machine()]
    print_table(rows)
    print()
    for name in (list(BENCHES) if args.which == "all" else [args.which]):
        new = BENCHES[name]()
        print_table(new)
        print()
        rows += new
    rows[0]["total_s"] = round(time.perf_counter() - start, 1)
    print(f"all done in {rows[0]['total_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
