"""Report 5A §1.8, visual anagrams (Geng et al. 2024): one image that shows prompt 1 upright and prompt 2
upside down. Each step averages the two views' noise estimates (each a CFG estimate [A.4], gamma = 7):

    eps = ( eps_1(x_t) + flip(eps_2(flip(x_t))) ) / 2          (guidance.anagram; both views in one batch)

--view picks another view (rot90/rot180/rot270, mirror, negate, patches). Report pairs: "an oil painting of an
old man" / "an oil painting of people around a campfire", ...; MNIST: "6" / "9", "1" / "7", "0" / "8".
Outputs in outputs/a1_8_visual_anagrams/: anagrams.png (per pair, a row as generated and a row through the
view) and samples.pt (the images as generated, with prompts "a|b").
"""
import torch

import common
import part_a
from minidiff import guidance, viz
from minidiff.sampling import iterative_denoise

GAMMA = 7.0                                                                                  # §1.8
PAIRS = {"deepfloyd": [("an oil painting of an old man", "an oil painting of people around a campfire"),
                       ("an oil painting of a snowy mountain village", "a photo of the amalfi cost"),
                       ("a lithograph of a skull", "a photo of a hipster barista")],
         "mnist": [("6", "9"), ("1", "7"), ("0", "8")]}
SAMPLES_PER_PAIR = {"deepfloyd": 1, "mnist": 4}
VIEWS = {"flip": guidance.flip_vertical, "mirror": guidance.flip_horizontal, "negate": guidance.negate,
         "rot90": lambda: guidance.rotate(90), "rot180": lambda: guidance.rotate(180),
         "rot270": lambda: guidance.rotate(270), "patches": lambda: guidance.patch_permute(7)}


def main(argv=None):
    extra = lambda p: p.add_argument("--view", choices=sorted(VIEWS), default="flip",  # noqa: E731
                                     help="the second view (default: flip upside down, the report's)")
    args, dev, gen, backbone, out = part_a.setup(__doc__, "a1_8_visual_anagrams", argv, extra)
    pairs = part_a.quick(args, PAIRS[backbone.name]) if args.prompt is None else [tuple(args.prompt[:2])]
    if len(pairs[0]) != 2:
        raise ValueError("give two prompts: --prompt PROMPT_UPRIGHT PROMPT_VIEWED")
    view, n = VIEWS[args.view](), len(part_a.quick(args, range(SAMPLES_PER_PAIR[backbone.name])))
    rows, names, images, labels = [], [], [], []
    for a, b in pairs:
        eps_fn = guidance.anagram(backbone.model_fn, [backbone.embed([a]), backbone.embed([b])],
                                  [guidance.identity(), view], backbone.embed([""]), GAMMA)
        x = iterative_denoise(eps_fn, backbone.schedule, part_a.noise(backbone, n, dev, gen), backbone.timesteps,
                              generator=gen, threshold=backbone.threshold)
        x = backbone.to_unit(backbone.upsample(x, [a] * n))
        rows += [list(x), list(view.apply(x))]
        names += [part_a.title(a), f"{view.name}: {part_a.title(b)}"]
        images.append(x)
        labels += [f"{a}|{b}"] * n
    common.wrote(viz.save_table(rows, out / "anagrams.png", row_titles=names,
                                title=f"§1.8 visual anagrams, gamma = {GAMMA:g} ({backbone.name})"))
    part_a.save_samples(out, torch.cat(images), labels)


if __name__ == "__main__":
    common.run(main)
