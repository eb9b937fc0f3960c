"""What every stage shares: the common command-line knobs, the device and seed, the record a stage returns, and
one-line errors.

Stages are thin drivers: they parse arguments, call the library, and return a `Record` of what they wrote (files,
notes, metrics). `run` prints it for humans; run_all.py puts it in the HTML report.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

OUTPUTS = REPO / "outputs"
USER_ERRORS = (OSError, ValueError, FloatingPointError)   # bad input or a stopped run: one line, not a traceback


@dataclass
class Record:
    """What a stage's main() returns."""

    out: Path                                             # the stage's folder, <--out>/<stage>/
    files: list[Path] = field(default_factory=list)       # every file it wrote, in order
    notes: list[str] = field(default_factory=list)        # lines worth showing (the backbone used, a measurement)
    metrics: dict = field(default_factory=dict)           # numbers for the report (also in the stage's metrics.json)

    def wrote(self, path: Path | str) -> Path:
        """Add a written file to the record; returns it."""
        self.files.append(Path(path))
        return Path(path)

    def write_metrics(self) -> Path:
        """Write self.metrics to the stage's metrics.json, and record it."""
        (self.out / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
        return self.wrote(self.out / "metrics.json")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors in one line (not the usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def integer(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [lo, hi] (hi None: no upper bound)."""
    def parse(text: str) -> int:
        try:
            value = int(text if text.isascii() else "?")      # (int() would also read "٣" as 3)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {lo} .. {hi}, got {value}" if hi is not None else
                                             f"must be at least {lo}, got {value}")
        return value
    return parse


def real(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number from lo to hi (hi None: no upper bound; *_open: that end excluded)."""
    bounds = [f"{'>' if lo_open else '≥'} {lo:g}"] + ([f"{'<' if hi_open else '≤'} {hi:g}"] if hi is not None else [])

    def parse(text: str) -> float:
        try:
            value = float(text if text.isascii() else "?")
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = (math.isfinite(value) and (value > lo if lo_open else value >= lo)
              and (hi is None or (value < hi if hi_open else value <= hi)))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite number {' and '.join(bounds)}, got {text}")
        return value
    return parse


def text(value: str) -> str:
    """An argparse type: a non-empty string (a model id, a folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


SEED = integer(0, 2**32 - 1)


def parser(doc: str) -> ArgumentParser:
    """The knobs every stage has (DESIGN §4). `doc` is the stage's module docstring."""
    p = ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUTPUTS, help="root folder for outputs (default: outputs/)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps ... (default: cuda if available)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed, 0 .. 2^32-1; the same seed gives the same result")
    p.add_argument("--quick", action="store_true", help="a small CPU profile that finishes in minutes")
    return p


def device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(name)
        torch.empty(1, device=d)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device {name!r} is not usable here ({str(e).splitlines()[0]}); try --device cpu") from None
    if d.type == "meta":                        # tensors without data: nothing could be computed or saved
        raise ValueError("device 'meta' holds no data; choose cpu, cuda or mps")
    return d


def native_bf16(dev: torch.device) -> bool:
    """Whether `dev` computes bfloat16 in hardware: CUDA GPUs from Ampere (compute capability 8) on, CPUs with AVX-512
    BF16 or AMX. There --quick trains with bf16 autocast and samples with the model in bf16 (model_dtype), and the
    judges train with bf16 autocast. Elsewhere bf16 is emulated, and much slower than fp32 (`python tools/bench.py
    train` measures it)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_capability(dev)[0] >= 8
    return dev.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")                        # Linux; elsewhere no flags are known
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return set(next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), []))


def model_dtype(args: argparse.Namespace, dev: torch.device) -> torch.dtype:
    """The dtype a stage samples a trained MNIST model in: bfloat16 with --quick where the hardware computes it
    (2.2-2.5x as fast on two AVX-512-BF16 cores, with the same class accuracy and Fréchet distance: README,
    Profiles), float32 elsewhere. The sampling loop itself stays in float32 (ddpm.estimator)."""
    return torch.bfloat16 if args.quick and native_bf16(dev) else torch.float32


def record(args: argparse.Namespace, stage: str) -> Record:
    """The stage's empty record; creates its folder <--out>/<stage>/ (an absolute path)."""
    out = Path(args.out).resolve() / stage
    out.mkdir(parents=True, exist_ok=True)
    return Record(out)


def generator(seed: int, dev: torch.device) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator(device=dev).manual_seed(seed)


def shown(path: Path) -> str:
    """A path as printed: relative to the repository inside it, absolute outside."""
    full = Path(path).resolve()
    return str(full.relative_to(REPO) if full.is_relative_to(REPO) else full)


def show(rec: Record) -> None:
    """Print a record for humans: its notes, then 'wrote <path>' for every file."""
    for note in rec.notes:
        print(note)
    for path in rec.files:
        print(f"wrote {shown(path)}")


def command(stage: str, args: argparse.Namespace) -> str:
    """The command that runs `stage` for this run's --out and --quick, for 'run ... first' messages."""
    flags = (" --quick" if args.quick else "") + ("" if Path(args.out).resolve() == OUTPUTS else f" --out {args.out}")
    return f"python stages/{stage}.py{flags}"


def one_line(e: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def run(main: Callable[[], Record]) -> None:
    """Run a stage's main() from the command line and print its record: bad input ends with one line saying what to
    do (MINIDIFF_DEBUG=1 shows the traceback); Ctrl-C ends quietly (training keeps its last checkpoint)."""
    start = time.perf_counter()
    try:
        rec = main()
    except KeyboardInterrupt:
        sys.exit("interrupted (rerun the same command to resume training from the last checkpoint)")
    except USER_ERRORS as e:
        if os.environ.get("MINIDIFF_DEBUG"):
            raise
        sys.exit(f"error: {one_line(e)}")
    show(rec)
    print(f"done in {time.perf_counter() - start:.1f} s")
