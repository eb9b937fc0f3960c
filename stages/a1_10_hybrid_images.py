"""Report 5A §1.10, hybrid images (Geng et al. 2024, Factorized Diffusion): low frequencies from prompt 1 (seen
from far away), high frequencies from prompt 2 (seen up close); each a CFG estimate [A.4], gamma = 7:

    eps = lowpass(eps_1(x_t)) + highpass(eps_2(x_t))    Gaussian, kernel 33, sigma 2   (guidance.hybrid)

Report pairs: "a lithograph of a skull" far / "a lithograph of waterfalls" near, ...; MNIST: "0" far / "1" near, ...
Outputs in outputs/a1_10_hybrid_images/: hybrids.png (per pair, a row of hybrids up close and a row of the same
seen from afar = the same low-pass filter, widened by stage II's upscaling) and samples.pt (prompts "far|near").
"""
import torch

import common
import part_a
from minidiff import guidance, viz
from minidiff.sampling import iterative_denoise

GAMMA = 7.0                                                                             # §1.10
KERNEL_SIZE, SIGMA = 33, 2.0                                                            # §1.10 low-pass filter
PAIRS = {"photos": [("a lithograph of a skull", "a lithograph of waterfalls"),
                       ("an oil painting of an old man", "a rocket ship"),
                       ("a photo of a dog", "an oil painting of a snowy mountain village")],
         "digits": [("0", "1"), ("8", "7"), ("3", "4")]}
SAMPLES_PER_PAIR = {"photos": 1, "digits": 4}


def options(p):
    p.add_argument("--num-samples", type=int, help="samples per prompt pair (default: 1 for photos, 4 for digits)")


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_10_hybrid_images", argv, options,
                                                  image=None, prompt=2)          # --prompt FAR NEAR
    pairs = [tuple(args.prompt)] if args.prompt else part_a.pick(args, backbone, PAIRS)
    n = part_a.count(args, backbone, SAMPLES_PER_PAIR, "num_samples")
    rows, names, images, labels = [], [], [], []
    for far, near in pairs:
        eps_fn = guidance.hybrid(backbone.model_fn, backbone.embed([far]), backbone.embed([near]),
                                 backbone.embed([""]), GAMMA, KERNEL_SIZE, SIGMA)
        x = iterative_denoise(eps_fn, backbone.schedule, part_a.noise(backbone, n, dev, gen), backbone.timesteps,
                              generator=gen, progress=True)
        x = backbone.to_unit(backbone.upsample(x, [far] * n))
        scale = x.shape[-1] / backbone.image_shape[-1]                # IF: stage II made it 4x larger
        # seen from afar: the sampling's low-pass filter, widened to the shown size
        afar = guidance.gaussian_blur(x, 2 * round(KERNEL_SIZE // 2 * scale) + 1, SIGMA * scale)
        rows += [list(x), list(afar)]
        names += [f"near: {part_a.title(near)}", f"far: {part_a.title(far)}"]
        images.append(x)
        labels += [f"{far}|{near}"] * n
    rec.wrote(viz.save_table(rows, rec.out / "hybrids.png", row_titles=names,
                             title=f"§1.10 hybrid images, kernel {KERNEL_SIZE}, sigma {SIGMA:g} ({backbone.name})"))
    part_a.save_samples(rec, torch.cat(images), labels)
    return rec


if __name__ == "__main__":
    common.run(main)
