"""Report 5A §1.8, visual anagrams (Geng et al. 2024): one image that shows prompt 1 upright and prompt 2
upside down. Each step averages the two views' noise estimates (each a CFG estimate [A.4], gamma = 7):

    eps = ( eps_1(x_t) + flip(eps_2(flip(x_t))) ) / 2          (guidance.anagram; both views in one batch)

--view picks another view (guidance.VIEWS: rot90/rot180/rot270, mirror, negate (DeepFloyd only), patches: a 4x4
jigsaw).
Report pairs: "an oil painting of an old man" / "an oil painting of people around a campfire", ...; MNIST: "6" / "9",
"1" / "7", "0" / "8".
Outputs in outputs/a1_8_visual_anagrams/: anagrams.png (per pair, a row as generated and a row through the
view) and samples.pt (the images as generated, with prompts "a|b").
"""
import torch

import common
import part_a
from minidiff import guidance, viz
from minidiff.sampling import iterative_denoise

GAMMA = 7.0                                                                                  # §1.8
PAIRS = {"photos": [("an oil painting of an old man", "an oil painting of people around a campfire"),
                       ("an oil painting of a snowy mountain village", "a photo of the amalfi cost"),
                       ("a lithograph of a skull", "a photo of a hipster barista")],
         "digits": [("6", "9"), ("1", "7"), ("0", "8")]}
SAMPLES_PER_PAIR = {"photos": 1, "digits": 4}


def options(p):
    p.add_argument("--view", choices=sorted(guidance.VIEWS), default="flip",
                   help="the second view (default: flip upside down, the report's)")
    p.add_argument("--num-samples", type=int, help="samples per prompt pair (default: 1 for photos, 4 for digits)")


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_8_visual_anagrams", argv, options,
                                                  image=None, prompt=2)          # --prompt UPRIGHT VIEWED
    pairs = [tuple(args.prompt)] if args.prompt else part_a.pick(args, backbone, PAIRS)
    if args.view == "negate" and backbone.image_range[0] >= 0:
        raise ValueError(f"--view negate inverts images in [-1, 1] (DeepFloyd); the {backbone.name} model works in "
                         f"{list(backbone.image_range)}, where -x is no image: pick another --view")
    view = guidance.view(args.view, backbone.image_shape[-1])                # what the model sees, at its size
    n = part_a.count(args, backbone, SAMPLES_PER_PAIR, "num_samples")
    rows, names, images, labels = [], [], [], []
    for a, b in pairs:
        eps_fn = guidance.anagram(backbone.model_fn, [backbone.embed([a]), backbone.embed([b])],
                                  [guidance.identity(), view], backbone.embed([""]), GAMMA)
        x = iterative_denoise(eps_fn, backbone.schedule, part_a.noise(backbone, n, dev, gen), backbone.timesteps,
                              generator=gen, progress=True)
        x = backbone.upsample(x, [a] * n)                                  # model range; IF: stage II, 256 px
        seen = guidance.view(args.view, x.shape[-1]).apply(x)              # the view in the model's range
        x = backbone.to_unit(x)
        rows += [list(x), list(backbone.to_unit(seen))]
        names += [part_a.title(a), f"{view.name}: {part_a.title(b)}"]
        images.append(x)
        labels += [f"{a}|{b}"] * n
    rec.wrote(viz.save_table(rows, rec.out / "anagrams.png", row_titles=names,
                             title=f"§1.8 visual anagrams, gamma = {GAMMA:g} ({backbone.name})"))
    part_a.save_samples(rec, torch.cat(images), labels)
    return rec


if __name__ == "__main__":
    common.run(main)
