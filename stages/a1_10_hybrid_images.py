"""Report 5A §1.10, hybrid images (Geng et al. 2024, Factorized Diffusion): low frequencies from prompt 1 (seen
from far away), high frequencies from prompt 2 (seen up close); each a CFG estimate [A.4], gamma = 7:

    eps = lowpass(eps_1(x_t)) + highpass(eps_2(x_t))    Gaussian, kernel 33, sigma 2   (guidance.hybrid)

Report pairs: "a lithograph of a skull" far / "a lithograph of waterfalls" near, ...; MNIST: "8" far / "2" near, ...
With digits the Part B judges read MEASURED samples of each pair (one batch of as many seeds): the rate of those
read as the near prompt up close (the CNN judge) AND as the far prompt seen from afar (the far judge, a CNN trained
on digits low-passed by the same filter: the first one calls most blurred digits an 8). Beside it, the same rate for
hybrids made of real test digits by the classical recipe (Oliva et al. 2006: highpass(near) + lowpass(far)): how
often a 28 px hybrid can be read both ways at all.
DeepFloyd's stage II keeps the split: both prompts, the filter widened to 256 px, noise level 50 (Geng et al.'s
code), so the near prompt still owns the high frequencies stage II adds; hybrids_stage1.png shows the 64 px results.
Outputs in outputs/a1_10_hybrid_images/: hybrids.png (per pair, a row of hybrids up close and a row of the same
seen from afar = the same low-pass filter, widened by stage II's upscaling), hybrids_stage1.png (DeepFloyd),
samples.pt (prompts "far|near") and metrics.json (digits: the rates).
"""
import torch

import common
import part_a
from minidiff import deepfloyd, evaluate, guidance, viz
from minidiff.data import load_mnist
from minidiff.sampling import iterative_denoise

GAMMA = 7.0                                                                             # §1.10
KERNEL_SIZE, SIGMA = 33, 2.0                                                            # §1.10 low-pass filter
ILLUSION_NOISE_LEVEL = 50   # DeepFloyd's stage II for illusions (Geng et al.'s code): both prompts, level 50
# Digits: low-passed, most of them blur into one blob, and an 8's two loops survive the blur best; classical hybrids of
# real digits read both ways (the stage's reference rate): 8/2 48 %, 8/7 20 %, 0/1 0 %.
PAIRS = {"photos": [("a lithograph of a skull", "a lithograph of waterfalls"),
                       ("an oil painting of an old man", "a rocket ship"),
                       ("a photo of a dog", "an oil painting of a snowy mountain village")],
         "digits": [("8", "2"), ("8", "7"), ("0", "1")]}
SAMPLES_PER_PAIR = {"photos": 1, "digits": 4}
REAL_PER_PAIR = 200         # digits: the classical hybrids of real test digits that give each pair's reference rate


def widened(scale: float) -> tuple[int, float]:
    """The §1.10 low-pass filter (kernel size, sigma) for an image `scale` times stage I's size (IF's stage II: 4)."""
    return 2 * round(KERNEL_SIZE // 2 * scale) + 1, SIGMA * scale


def real_hybrids(far: str, near: str, n: int, dev) -> torch.Tensor:
    """(n, 1, 28, 28) classical hybrids of real MNIST test digits, in [0, 1]: highpass(the first n `near` digits)
    + lowpass(the first n `far` ones), with §1.10's filter (Oliva et al. 2006)."""
    x, y = load_mnist(train=False)
    digit = lambda d: x[y == int(d)][:n].unsqueeze(1).float().div(255.0).to(dev)     # noqa: E731  (n, 1, 28, 28)
    return (guidance.highpass(digit(near), KERNEL_SIZE, SIGMA)
            + guidance.gaussian_blur(digit(far), KERNEL_SIZE, SIGMA)).clamp(0, 1)


def read_both_ways(judged, far_judged, x: torch.Tensor, afar: torch.Tensor, far: str, near: str) -> torch.Tensor:
    """(N,) bool: each hybrid x read as `near` up close by the CNN judge and, low-passed (`afar`), as `far` by the far
    judge. x, afar: (N, 1, 28, 28) in [0, 1]."""
    return ((part_a.read(judged, x) == part_a.label_of(near))
            & (part_a.read(far_judged, afar) == part_a.label_of(far)))


def options(p):
    p.add_argument("--num-samples", type=common.integer(1), help="samples per prompt pair (default: 1 for photos, 4 for digits)")


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_10_hybrid_images", argv, options,
                                                  image=None, prompt=2)          # --prompt FAR NEAR
    pairs = [tuple(args.prompt)] if args.prompt else part_a.pick(args, backbone, PAIRS)
    n = part_a.count(args, backbone, SAMPLES_PER_PAIR, "num_samples")
    judged = part_a.judges(backbone, dev, rec)
    if judged:
        far_judged = evaluate.far_judge(device=dev, bf16=common.native_bf16(dev))
        rec.notes.append(f"from afar the rates are judged by the far judge, a CNN with "
                         f"{100 * far_judged.test_accuracy:.2f} % on test digits low-passed by the same filter")
    drawn = max(n, part_a.MEASURED) if judged else n                         # digits: the figure's + the measured
    rows, names, images, labels, both, real, firsts = [], [], [], [], [], [], []
    for far, near in pairs:
        c_far, c_near, uncond = backbone.embed([far]), backbone.embed([near]), backbone.embed([""])
        eps_fn = guidance.hybrid(backbone.model_fn, c_far, c_near, uncond, GAMMA, KERNEL_SIZE, SIGMA)
        first = iterative_denoise(eps_fn, backbone.schedule, part_a.noise(backbone, drawn, dev, gen),
                                  backbone.timesteps, generator=gen, progress=True)   # IF: the 64 px stage-I result
        x = backbone.to_unit(backbone.upsample(first, [far] * drawn, noise_level=ILLUSION_NOISE_LEVEL,
                                               guide=lambda model_fn, S: guidance.hybrid(  # the split, at S px
                                                   model_fn, c_far, c_near, uncond, deepfloyd.STAGE2_GUIDANCE,
                                                   *widened(S / backbone.image_shape[-1]))))
        afar = guidance.gaussian_blur(x, *widened(x.shape[-1] / backbone.image_shape[-1]))   # seen from afar
        first = backbone.to_unit(first[:n])
        firsts += [list(first), list(guidance.gaussian_blur(first, KERNEL_SIZE, SIGMA))]
        if judged:                                                    # near up close AND far from afar
            hits = read_both_ways(judged, far_judged, x, afar, far, near)      # the figure's images
            both.append(hits)
            part_a.measure(rec, f"{far}|{near}", hits, f'"{near}" up close and "{far}" from afar')
            h = real_hybrids(far, near, REAL_PER_PAIR, dev)                                  # (200, 1, 28, 28)
            real.append(read_both_ways(judged, far_judged, h, guidance.gaussian_blur(h, KERNEL_SIZE, SIGMA), far, near))
            part_a.measure(rec, f"{far}|{near} real digits", real[-1],
                           "the same, classical hybrids of real digits")
        rows += [list(x[:n]), list(afar[:n])]
        names += [f"near: {part_a.title(near)}", f"far: {part_a.title(far)}"]
        images.append(x[:n])
        labels += [f"{far}|{near}"] * n
    rec.wrote(viz.save_table(rows, rec.out / "hybrids.png", row_titles=names,
                             title=f"§1.10 hybrid images, kernel {KERNEL_SIZE}, sigma {SIGMA:g} ({backbone.name})"))
    if firsts[0][0].shape != rows[0][0].shape:                             # IF: the stage-I results, the deliverable
        rec.wrote(viz.save_table(firsts, rec.out / "hybrids_stage1.png", row_titles=names,
                                 title=f"§1.10 hybrid images, stage I ({firsts[0][0].shape[-1]} px)"))
    part_a.save_samples(rec, torch.cat(images), labels)
    if judged:
        part_a.measure(rec, "all pairs", torch.cat(both), "every pair read both ways")
        part_a.measure(rec, "all pairs real digits", torch.cat(real), "the same, classical hybrids of real digits")
        rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
