"""What DeepFloyd IF keeps on the device: both UNets when they fit, one at a time below, and T5 beside them only
where all three fit. The plan is a pure function of sizes (tested with made-up devices); `device_bytes` asks the
device.

    plan = memory_plan(device_bytes(torch.device("cuda")), unet_bytes=(8.6e9, 2.5e9), t5_bytes=9.5e9)
    plan.keep_unets, plan.t5_beside_unets, plan.note

The rule: weights may take at most SHARE of the device (the rest is for activations, the CUDA context, the
allocator's fragmentation and whatever else runs there, such as a notebook's other tensors). With IF-I-XL and
IF-II-L in fp16 (11.1 GB of weights): both UNets stay on 24 GB and more, one at a time on 16 GB and below; T5 XXL
(9.5 GB in bf16) joins them on 40 GB and more, and is loaded alone (the UNets freed first) below.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

SHARE = 0.6          # of the device's memory, for weights kept together (measured peaks: README's GPU table)
ALONE_SHARE = 0.9    # one network alone: its weights and a small batch's activations


@dataclass(frozen=True)
class MemoryPlan:
    keep_unets: bool          # stage I and stage II stay loaded together
    t5_beside_unets: bool     # T5 may be loaded while the UNets are there (else they are freed first)
    note: str                 # one line for the user: what was chosen, and why


def memory_plan(device: int, unet_bytes: tuple[int, int], t5_bytes: int) -> MemoryPlan:
    """The plan for a device of `device` bytes, UNets of unet_bytes = (stage I, stage II) and T5 of t5_bytes."""
    gb = lambda n: f"{n / 1e9:.1f} GB"                                                  # noqa: E731
    unets = sum(unet_bytes)
    keep = unets <= SHARE * device
    beside = keep and unets + t5_bytes <= SHARE * device
    largest = max(*unet_bytes, t5_bytes)
    if largest > ALONE_SHARE * device:
        warn = f"; the largest network ({gb(largest)}) may not fit at all: choose IF-I-L or IF-I-M, or the CPU"
    else:
        warn = ""
    if beside:
        what = f"keeps both UNets and T5 on the device ({gb(unets + t5_bytes)} of {gb(device)})"
    elif keep:
        what = (f"keeps both UNets on the device ({gb(unets)} of {gb(device)}); frees them before T5 "
                f"({gb(t5_bytes)}) encodes an uncached prompt")
    else:
        what = (f"loads one network at a time ({gb(unets)} of UNets is more than {SHARE:.0%} of {gb(device)}): "
                f"stage I and stage II are reloaded from the file cache at each switch")
    return MemoryPlan(keep, beside, f"memory plan: {what}{warn}")


def device_bytes(device: torch.device) -> int:
    """The device's total memory: the GPU's, or the machine's RAM for the CPU (Linux and macOS; elsewhere a
    conservative 8 GB)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 8 * 10**9
