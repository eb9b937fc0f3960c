"""Benchmarks: `python -m minidiff.bench [train|sample|unet|load|all] [--json FILE]`.

Each benchmark is a function registered in BENCHES (name -> function returning a list of row dicts);
`all` runs every registered one. The rows are printed as a table and, with --json, written to a file.

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from minidiff.unet_if import IFUNet, IFUNetConfig

BENCHES: dict[str, Callable[[], list[dict]]] = {}


def register(name: str):
    """Decorator: BENCHES[name] = fn. Other modules add their benchmarks the same way."""
    def add(fn):
        BENCHES[name] = fn
        return fn
    return add


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


@register("unet")
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


@register("load")
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
            code = f"from minidiff.bench import _load_child; _load_child({str(folder)!r}, {dtype!r})"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 cwd=Path(__file__).parents[1])
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


# ----------------------------------------------------------------------------------------------------------


def print_table(rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="all", choices=["train", "sample", "unet", "load", "all"])
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.which != "all" and args.which not in BENCHES:
        parser.error(f"benchmark {args.which!r} is not implemented yet (registered: {', '.join(BENCHES)})")
    names = list(BENCHES) if args.which == "all" else [args.which]
    rows = []
    for name in names:
        new = BENCHES[name]()
        print_table(new)
        print()
        rows += new
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
