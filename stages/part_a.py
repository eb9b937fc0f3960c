"""What every Part A stage (a0 .. a1_10) shares: the backbone registry, prompts and inputs, samples.pt, figure rows.

Every Part A experiment runs on a `minidiff.backbone.Backbone`, chosen by --backbone among BACKBONES:
  deepfloyd   DeepFloyd IF (stage I + II), the report's model (--model / --stage2: Hub ids or folders)
  mnist       our class-conditioned MNIST DDPM from Part B (b2_4); digits play the prompts
  mnist-flow  our class-conditioned MNIST flow-matching model from the 2025 Part B (fm2_5), the same way
  auto        deepfloyd when it is available, otherwise mnist (and says why)
Adding a backbone is an adapter (any object with the Backbone interface) and one line in BACKBONES. Stages key their
defaults (prompts, images, blur) on `backbone.domain` ("photos", "digits"); where a stage has no default for a
backbone's domain, it says in one line which flag to pass.
--quick (the CI profile) keeps at most QUICK_ITEMS input images / prompt pairs / samples per pair; the figures keep
their layout.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

import common
from minidiff import data, deepfloyd, evaluate, guidance, hub, prompts
from minidiff.editing import sdedit
from minidiff.mnist_backbone import MNISTBackbone
from minidiff.schedule import FlowPath

QUICK_ITEMS = 2
MEASURED = 20         # digits: the samples behind each rate a stage measures, one batch of as many seeds
BLUR_KERNEL = 5                                   # §1.2: the Gaussian blur's size
BLUR_SIGMA = {"photos": 2.0, "digits": 1.0}      # §1.2: sigma 2 on IF's 64 px photos; MNIST digits are 28 px
MNIST_CHECKPOINT = {"mnist": Path("b2_4_train_class_conditioned") / "checkpoint.pt",      # under --out
                    "mnist-flow": Path("fm2_5_train_class_conditioned") / "checkpoint.pt"}


def load_deepfloyd(args: argparse.Namespace, dev: torch.device) -> deepfloyd.DeepFloydBackbone:
    """IF from --model / --stage2, in float16 on a GPU and float32 on the CPU."""
    return deepfloyd.DeepFloydBackbone.from_pretrained(
        args.model, args.stage2, device=dev, dtype=torch.float16 if dev.type == "cuda" else torch.float32)


def load_mnist(args: argparse.Namespace, dev: torch.device) -> MNISTBackbone:
    """The class-conditioned model that b2_4 (--backbone mnist) or fm2_5 (mnist-flow) trained under --out, or
    --checkpoint."""
    path = args.checkpoint or Path(args.out) / MNIST_CHECKPOINT[args.backbone]
    if not Path(path).is_file():
        train = common.command(MNIST_CHECKPOINT[args.backbone].parent.name, args)
        raise FileNotFoundError(f"no MNIST checkpoint at {path}; run `{train}` first (or pass --checkpoint)")
    backbone = MNISTBackbone.from_checkpoint(path, dev, common.model_dtype(args, dev))
    if backbone.name != args.backbone:
        raise ValueError(f"{path} holds the {backbone.name} model: run with --backbone {backbone.name}")
    return backbone


BACKBONES = {"deepfloyd": load_deepfloyd, "mnist": load_mnist, "mnist-flow": load_mnist}  # name -> loader(args, dev)


def auto_backbone(model: str = deepfloyd.STAGE1_SOURCE, stage2: str = deepfloyd.STAGE2_SOURCE,
                  needed_prompts: Sequence[str] = prompts.REPORT_PROMPTS) -> tuple[str, str]:
    """--backbone auto: ("deepfloyd", "") when IF runs here offline, else ("mnist", why not). Cheap: looks for
    files, loads nothing."""
    reason = deepfloyd.unavailable_reason(model, stage2, needed_prompts=needed_prompts)
    return ("deepfloyd", "") if reason is None else ("mnist", f"DeepFloyd IF not available: {reason}")


def parser(doc: str, image: str | int | None = "+", prompt: str | int | None = "+") -> argparse.ArgumentParser:
    """common.parser plus the Part A knobs. image, prompt: how many --image / --prompt values the stage takes, as
    argparse's nargs ("+" any number, 1, 2), or None when it takes none (then the option does not exist)."""
    p = common.parser(doc)
    p.add_argument("--backbone", choices=("auto", *BACKBONES), default="auto",
                   help="the pretrained model: DeepFloyd IF, or our MNIST DDPM or flow model (default: auto)")
    p.add_argument("--model", type=common.text, default=deepfloyd.STAGE1_SOURCE,
                   help="DeepFloyd stage I: a Hub repo id (DeepFloyd/IF-I-XL-v1.0, -L-, -M-) or a local folder laid "
                        "out like one; its T5 encodes prompts missing from the cache (default: %(default)s)")
    p.add_argument("--stage2", type=common.text, default=deepfloyd.STAGE2_SOURCE,
                   help="DeepFloyd stage II (super-resolution to 256 px): Hub repo id (DeepFloyd/IF-II-L-v1.0, "
                        "-M-) or local folder (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"MNIST backbone weights (default: <--out>/{MNIST_CHECKPOINT['mnist']}, or "
                        f"<--out>/{MNIST_CHECKPOINT['mnist-flow']} for mnist-flow)")
    p.set_defaults(image=None, prompt=None)
    if image is not None:
        p.add_argument("--image", type=Path, nargs=image, help="input image(s) instead of the defaults")
    if prompt is not None:
        p.add_argument("--prompt", nargs=prompt,
                       help="prompt(s) instead of the report's; MNIST: digits '0'..'9', '' = unconditional")
    return p


def load_backbone(args: argparse.Namespace, dev: torch.device):
    """(the backbone named by --backbone, on `dev`; notes saying which one auto chose and why, and DeepFloyd's
    memory plan)."""
    name, notes = args.backbone, []
    if name == "auto":
        name, why = auto_backbone(args.model, args.stage2, [*prompts.REPORT_PROMPTS, *(args.prompt or [])])
        if name == "deepfloyd":
            try:
                backbone = load_deepfloyd(args, dev)
                return backbone, [backbone.memory_note]
            except hub.LoadError as e:
                name, why = "mnist", f"DeepFloyd IF not available: {e}"
        notes.append(f"backbone: {name} ({why})")
        args.backbone = name
    backbone = BACKBONES[name](args, dev)
    return backbone, notes + ([backbone.memory_note] if name == "deepfloyd" else [])


def setup(doc: str, stage: str, argv=None, extra=None, image: str | int | None = "+",
          prompt: str | int | None = "+"):
    """Parse (`extra(p)` adds stage-only arguments; image, prompt as in `parser`), pick the device, seed, load the
    backbone: (args, dev, generator, backbone, the stage's record)."""
    p = parser(doc, image, prompt)
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    dev = common.device(args.device)
    gen = common.generator(args.seed, dev)
    backbone, notes = load_backbone(args, dev)
    rec = common.record(args, stage)
    rec.notes += notes
    return args, dev, gen, backbone, rec


def option(args: argparse.Namespace, backbone, defaults: dict, name: str):
    """--<name> when given, else the stage's default for this backbone (`defaults` is keyed by backbone.domain); for
    a backbone whose domain the stage has no default for, a one-line error that names the flag to pass."""
    given = getattr(args, name)
    if given is not None:
        return given
    if backbone.domain not in defaults:
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"this stage has no default for {flag} in the {backbone.domain!r} domain of the "
                         f"{backbone.name} backbone: pass {flag}")
    return defaults[backbone.domain]


def pick(args: argparse.Namespace, backbone, defaults: dict, name: str = "prompt") -> list:
    """A list option (--prompt, --image) as `option`; the defaults are cut to QUICK_ITEMS with --quick."""
    items = list(option(args, backbone, defaults, name))
    return items if getattr(args, name) is not None else quick(args, items)


def count(args: argparse.Namespace, backbone, defaults: dict, name: str) -> int:
    """A number option (--num-samples) as `option`; the default is cut to QUICK_ITEMS with --quick."""
    n = option(args, backbone, defaults, name)
    return n if getattr(args, name) is not None else len(quick(args, range(n)))


def add_blur_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blur-sigma", type=common.real(0, lo_open=True), help="sigma of the §1.2 Gaussian blur, in pixels (default: "
                   + ", ".join(f"{sigma:g} for {name}" for name, sigma in BLUR_SIGMA.items()) + ")")


def blur(args: argparse.Namespace, backbone, x: torch.Tensor) -> torch.Tensor:
    """§1.2, the classical denoiser: a Gaussian blur of x with BLUR_KERNEL taps and --blur-sigma."""
    return guidance.gaussian_blur(x, BLUR_KERNEL, option(args, backbone, BLUR_SIGMA, "blur_sigma"))


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


def stage_rows(backbone, first: torch.Tensor, final: torch.Tensor) -> tuple[list[list], Optional[list[str]], dict]:
    """(the figure's rows, their titles, samples.pt's extra): the final images in [0, 1], and above them the
    stage-I ones when stage II changed the size (IF: the 64 px results, the report's deliverable, and the 256 px)."""
    first = backbone.to_unit(first)
    if first.shape[-1] == final.shape[-1]:
        return [list(final)], None, {}
    return ([list(first), list(final)], [f"stage I, {first.shape[-1]} px", f"stage II, {final.shape[-1]} px"],
            {"stage1": first.float().cpu()})


def label_of(prompt: str) -> int:
    """A digit prompt's class for samples.pt; -1 for anything else."""
    return int(prompt) if len(prompt.strip()) == 1 and prompt.strip() in "0123456789" else -1


def save_samples(rec: common.Record, images: torch.Tensor, prompts: Sequence[str], **extra) -> Path:
    """samples.pt (data.save_samples) with the prompts, and labels when every prompt is a digit."""
    labels = [label_of(p) for p in prompts]
    labels = torch.tensor(labels) if all(y >= 0 for y in labels) else None
    return rec.wrote(data.save_samples(rec.out / "samples.pt", images, labels, prompts=list(prompts), **extra))


def title(prompt: str) -> str:
    """A prompt as a figure title ("" reads as unconditional)."""
    return f'"{prompt}"' if prompt else "(unconditional)"


def noised_series(backbone, x0: torch.Tensor, ts: Sequence[int], gen: torch.Generator) -> list[torch.Tensor]:
    """§1.1: x0 (1, C, H, W) noised by [A.1] to each t of ts, one fresh eps each (same seed -> same images,
    so §1.1, §1.2 and §1.3 show the same noisy inputs)."""
    return [backbone.schedule.add_noise(x0, t, torch.randn(x0.shape, generator=gen, device=x0.device)) for t in ts]


def noise_levels(backbone, fractions: Sequence[float]) -> list[int]:
    """Timesteps at fractions of the time axis: (0.25, 0.5, 0.75) -> IF t = 250, 500, 750 of T = 1000; MNIST DDPM
    75, 150, 225 of 300; on a flow path the times themselves, t = 0.25, 0.5, 0.75 (the fall 2026 draft's §1.1; there
    t grows toward the data, so 0.25 is the noisiest)."""
    if isinstance(backbone.schedule, FlowPath):
        return list(fractions)
    return [int(round(f * backbone.schedule.num_steps)) for f in fractions]


def sdedit_rows(backbone, eps_fns, images, i_starts: Sequence[int], gen: torch.Generator, drawn: int = 1):
    """§1.7-§1.7.3: SDEdit (editing.sdedit) of each image at each i_start, then the original; each edit drawn `drawn`
    times in one batch (as many seeds), the figure showing the first. eps_fns: one estimator per image. Returns
    (rows of (C, H, W) in [0, 1] for viz.save_table, the shown edits (N, C, H, W) in [0, 1] in row order, column
    titles, batches[image][k]: the `drawn` edits (drawn, C, H, W) in [0, 1] at i_starts[k])."""
    rows, edits, batches = [], [], []
    for eps_fn, x0 in zip(eps_fns, images):
        batch = [backbone.to_unit(sdedit(eps_fn, backbone.schedule, x0.expand(drawn, *x0.shape[1:]),
                                         backbone.timesteps, i, generator=gen)) for i in i_starts]
        edits += [b[0] for b in batch]
        rows.append([b[0] for b in batch] + [backbone.to_unit(x0)[0]])
        batches.append(batch)
    return rows, torch.stack(edits), [f"i_start = {i}" for i in i_starts] + ["original"], batches


# ---------------------------------------------------------------------------------------------------------------
# Measuring what a figure claims, where the backbone draws digits: the Part B judges read the samples.
# ---------------------------------------------------------------------------------------------------------------

def judges(backbone, dev: torch.device, rec: common.Record) -> Optional[evaluate.Judges]:
    """The judges of minidiff.evaluate when the backbone draws digits (else None: nothing here reads photos)."""
    if backbone.domain != "digits":
        return None
    judged = evaluate.judges(device=dev, bf16=common.native_bf16(dev))     # (bf16: how they train, if not cached)
    rec.notes.append(f"the rates below are {judged}")
    return judged


def read(judged, images: torch.Tensor) -> torch.Tensor:
    """The reading of (N, 1, 28, 28) digits in [0, 1] by `judged` (evaluate.Judges: their CNN; or one classifier, such
    as evaluate.far_judge): (N,) int64 on the CPU."""
    classifier = judged.classifier if isinstance(judged, evaluate.Judges) else judged
    with torch.no_grad():
        return classifier(images.float()).argmax(1).cpu()


def measure_edits(rec: common.Record, judged: evaluate.Judges, batches, i_starts: Sequence[int], digits, key: str,
                  what: str):
    """§1.7, §1.7.3: at each i_start, the rate of edits read as each image's digit in `digits` (one per image), as
    measure() records it under f"{key}_at_i_start_{i}". batches: sdedit_rows' batches[image][k]."""
    for k, i in enumerate(i_starts):
        hits = torch.cat([read(judged, batch[k]) == y for batch, y in zip(batches, digits)])
        measure(rec, f"{key}_at_i_start_{i}", hits, f"edits at i_start = {i} read as {what}")


def measure(rec: common.Record, key: str, hits: torch.Tensor, what: str) -> float:
    """Record the rate of `hits` ((N,) bool) with its 95 % Wilson interval: rec.metrics[key] and a note. Returns it."""
    n, k = len(hits), int(hits.sum())
    lo, hi = evaluate.wilson_interval(k, n)
    rec.metrics[key] = {"rate": k / n, "interval": [lo, hi], "n": n}
    rec.notes.append(f"{what}: {100 * k / n:.0f} % of {n} (95 % interval {100 * lo:.0f}-{100 * hi:.0f} %)")
    return k / n
