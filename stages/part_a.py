"""What every Part A stage (a1_1 .. a1_10) shares: backbone selection, prompts, inputs, samples.pt, figure rows.

Every Part A experiment runs on a `minidiff.backbone.Backbone`:
  --backbone deepfloyd   DeepFloyd IF (stage I + II), the report's model (--model / --stage2: Hub ids or folders)
  --backbone mnist       our class-conditioned MNIST model from Part B; digits play the prompts
  --backbone auto        deepfloyd when it is available, otherwise mnist (and says so)
Stages key their per-backbone constants (prompts, noise levels) on `backbone.name`.
--quick (the CI profile) keeps at most QUICK_ITEMS input images / prompt pairs / samples per pair; the figures keep
their layout.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

import common
from minidiff import guidance
from minidiff.mnist_backbone import MNISTBackbone
from minidiff.deepfloyd import STAGE1_SOURCE, STAGE2_SOURCE

QUICK_ITEMS = 2
MNIST_CHECKPOINT = Path("b2_4_train_class_conditioned") / "checkpoint.pt"     # under --out


def parser(doc: str, image: str | int | None = "+", prompt: str | int | None = "+") -> argparse.ArgumentParser:
    """common.parser plus the Part A knobs. image, prompt: how many --image / --prompt values the stage takes, as
    argparse's nargs ("+" any number, 1, 2), or None when it takes none (then the option does not exist)."""
    p = common.parser(doc)
    p.add_argument("--backbone", choices=("auto", "deepfloyd", "mnist"), default="auto",
                   help="the pretrained model: DeepFloyd IF or our MNIST model (default: auto)")
    p.add_argument("--model", default=STAGE1_SOURCE,
                   help="DeepFloyd stage I: a Hub repo id (DeepFloyd/IF-I-XL-v1.0, -L-, -M-) or a local folder laid "
                        "out like one; its T5 encodes prompts missing from the cache (default: %(default)s)")
    p.add_argument("--stage2", default=STAGE2_SOURCE,
                   help="DeepFloyd stage II (super-resolution to 256 px): Hub repo id (DeepFloyd/IF-II-L-v1.0, "
                        "-M-) or local folder (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"MNIST backbone weights (default: <--out>/{MNIST_CHECKPOINT})")
    p.set_defaults(image=None, prompt=None)
    if image is not None:
        p.add_argument("--image", type=Path, nargs=image, help="input image(s) instead of the defaults")
    if prompt is not None:
        p.add_argument("--prompt", nargs=prompt,
                       help="prompt(s) instead of the report's; MNIST: digits '0'..'9', '' = unconditional")
    return p


def load_backbone(args: argparse.Namespace, dev: torch.device):
    """The backbone named by --backbone, on `dev`. One-line errors for what is missing."""
    if args.backbone in ("deepfloyd", "auto"):
        from minidiff import deepfloyd, hub, prompts
        reason = None
        if args.backbone == "auto":   # cheap and offline: looks for the files, loads nothing
            reason = deepfloyd.unavailable_reason(args.model, args.stage2,
                                                  needed_prompts=[*prompts.REPORT_PROMPTS, *(args.prompt or [])])
        if reason is None:
            try:
                return deepfloyd.DeepFloydBackbone.from_pretrained(
                    args.model, args.stage2, device=dev, dtype=torch.float16 if dev.type == "cuda" else torch.float32)
            except hub.LoadError as e:
                if args.backbone == "deepfloyd":
                    raise
                reason = str(e)
        print(f"backbone: mnist (DeepFloyd IF not available: {reason})")
    path = args.checkpoint or Path(args.out) / MNIST_CHECKPOINT
    if not Path(path).is_file():
        train = common.command(MNIST_CHECKPOINT.parent.name, args)
        raise FileNotFoundError(f"no MNIST checkpoint at {path}; run `{train}` first (or pass --checkpoint)")
    return MNISTBackbone.from_checkpoint(path, dev)


def setup(doc: str, stage: str, argv=None, extra=None, image: str | int | None = "+",
          prompt: str | int | None = "+"):
    """Parse (`extra(p)` adds stage-only arguments; image, prompt as in `parser`), pick the device, seed, load the
    backbone: (args, dev, generator, backbone, out_dir)."""
    p = parser(doc, image, prompt)
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    dev = common.device(args.device)
    gen = common.generator(args.seed, dev)
    backbone = load_backbone(args, dev)
    return args, dev, gen, backbone, common.stage_dir(args, stage)


def pick(args: argparse.Namespace, backbone, defaults: dict, name: str = "prompt"):
    """--prompt / --image when given, else the stage's per-backbone default (cut to QUICK_ITEMS with --quick)."""
    given = getattr(args, name)
    return list(given) if given is not None else quick(args, list(defaults[backbone.name]))


def quick(args: argparse.Namespace, items: list) -> list:
    """The first QUICK_ITEMS items with --quick, else all."""
    return items[:QUICK_ITEMS] if args.quick else items


def inputs(args: argparse.Namespace, backbone) -> list[tuple[str, torch.Tensor]]:
    """(name, (1, C, H, W) in the model's range): --image files, else the backbone's test images."""
    if args.image:
        return [(Path(p).stem, backbone.load_image(p)) for p in args.image]
    return quick(args, backbone.test_images())


def eps_fn_for(backbone, prompts: str | Sequence[str], gamma: Optional[float] = None):
    """The estimator for one prompt (or one per image): conditional (gamma None) or CFG [A.4] against ""."""
    cond = backbone.embed([prompts] if isinstance(prompts, str) else list(prompts))
    if gamma is None:
        return guidance.conditional(backbone.model_fn, cond)
    return guidance.cfg(backbone.model_fn, cond, backbone.embed([""]), gamma)


def noise(backbone, n: int, dev: torch.device, gen: torch.Generator) -> torch.Tensor:
    """(n, C, H, W) standard normal: a pure-noise start at timesteps[0]."""
    return torch.randn((n, *backbone.image_shape), generator=gen, device=dev)


def label_of(prompt: str) -> int:
    """A digit prompt's class for samples.pt; -1 for anything else."""
    return int(prompt) if prompt.strip().isdigit() and len(prompt.strip()) == 1 else -1


def save_samples(out: Path, images: torch.Tensor, prompts: Optional[Sequence[str]] = None) -> Path:
    """samples.pt = {"images": (N, C, H, W) float32 in [0, 1], "labels": (N,) int64 when every prompt is a digit,
    "prompts": list[str] when given}."""
    d = {"images": images.detach().float().cpu().clamp(0, 1)}
    if prompts is not None:
        d["prompts"] = list(prompts)
        labels = [label_of(p) for p in prompts]
        if all(y >= 0 for y in labels):
            d["labels"] = torch.tensor(labels, dtype=torch.int64)
    path = out / "samples.pt"
    torch.save(d, path)
    return common.wrote(path)


def title(prompt: str) -> str:
    """A prompt as a figure title ("" reads as unconditional)."""
    return f'"{prompt}"' if prompt else "(unconditional)"


def noised_series(backbone, x0: torch.Tensor, ts: Sequence[int], gen: torch.Generator) -> list[torch.Tensor]:
    """§1.1: x0 (1, C, H, W) noised by [A.1] to each t of ts, one fresh eps each (same seed -> same images,
    so §1.1, §1.2 and §1.3 show the same noisy inputs)."""
    return [backbone.schedule.add_noise(x0, t, torch.randn(x0.shape, generator=gen, device=x0.device)) for t in ts]


def noise_levels(backbone, fractions: Sequence[float]) -> list[int]:
    """Timesteps at fractions of T: (0.25, 0.5, 0.75) -> IF 250, 500, 750; MNIST 75, 150, 225."""
    return [int(round(f * backbone.schedule.num_steps)) for f in fractions]


def sdedit_rows(backbone, eps_fns, images, i_starts: Sequence[int], gen: torch.Generator):
    """§1.7-§1.7.3: SDEdit (editing.sdedit) of each image at each i_start, then the original.
    eps_fns: one estimator per image. Returns (rows of (C, H, W) in [0, 1] for viz.save_table, the edits
    (N, C, H, W) in [0, 1] in row order, column titles)."""
    from minidiff.editing import sdedit
    rows, edits = [], []
    for eps_fn, x0 in zip(eps_fns, images):
        row = [backbone.to_unit(sdedit(eps_fn, backbone.schedule, x0, backbone.timesteps, i, generator=gen,
                                       threshold=backbone.threshold))[0] for i in i_starts]
        edits += row
        rows.append(row + [backbone.to_unit(x0)[0]])
    return rows, torch.stack(edits), [f"i_start = {i}" for i in i_starts] + ["original"]
