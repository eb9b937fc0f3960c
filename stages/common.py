"""What every stage shares: the common command-line knobs, the device and seed, one-line errors.

Stages are thin drivers: they parse arguments, call the library, and print every file they write.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

OUTPUTS = REPO / "outputs"


def parser(doc: str) -> argparse.ArgumentParser:
    """The knobs every stage has (DESIGN §4). `doc` is the stage's module docstring."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUTPUTS, help="root folder for outputs (default: outputs/)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same result")
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
    return d


def stage_dir(args: argparse.Namespace, stage: str) -> Path:
    d = Path(args.out) / stage
    d.mkdir(parents=True, exist_ok=True)
    return d


def generator(seed: int, dev: torch.device) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator(device=dev).manual_seed(seed)


def wrote(path: Path) -> Path:
    """Print 'wrote <path>': relative to the repository inside it, absolute outside (run_all reads these lines)."""
    full = Path(path).resolve()
    print(f"wrote {full.relative_to(REPO) if full.is_relative_to(REPO) else full}")
    return path


def command(stage: str, args: argparse.Namespace) -> str:
    """The command that runs `stage` for this run's --out and --quick, for 'run ... first' messages."""
    flags = (" --quick" if args.quick else "") + ("" if Path(args.out).resolve() == OUTPUTS else f" --out {args.out}")
    return f"python stages/{stage}.py{flags}"


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): bad input ends with one line saying what to do (MINIDIFF_DEBUG=1 shows the
    traceback); Ctrl-C ends quietly (training keeps its last checkpoint)."""
    start = time.perf_counter()
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (rerun the same command to resume training from the last checkpoint)")
    except (OSError, ValueError, FloatingPointError) as e:
        if os.environ.get("MINIDIFF_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.exit(f"error: {msg}")
    print(f"done in {time.perf_counter() - start:.1f} s")
