"""Report 5A §1.8, visual anagrams (Geng et al. 2024): one image that shows prompt 1 upright and prompt 2
through a view, upside down in the report. Each step averages the two views' estimates (each a CFG estimate
[A.4], gamma = 7; noise or velocity alike):

    eps = ( eps_1(x_t) + flip(eps_2(flip(x_t))) ) / 2          (guidance.anagram; both views in one batch)

Report pairs, flipped: "an oil painting of an old man" / "an oil painting of people around a campfire", ...
MNIST pairs, each with the view that makes it an anagram: "6" / "9" turned by 180° (the fall 2026 draft's view),
"2" / "5" and "0" / "8" flipped. --view picks another view for all (guidance.VIEWS: flip, mirror, rot90/rot180/rot270,
negate (DeepFloyd only), patches: a 4x4 jigsaw).
With digits the Part B judge reads MEASURED samples of each pair (one batch of as many seeds): the rate of
those read as prompt 1 upright AND prompt 2 through the view.
DeepFloyd's stage II keeps the illusion: it runs with both prompts and both views, at noise level 50 (Geng et al.'s
code), and anagrams_stage1.png shows the 64 px stage-I results the report's figures are made of.
Outputs in outputs/a1_8_visual_anagrams/: anagrams.png (per pair, a row as generated and a row through the
view), anagrams_stage1.png (DeepFloyd), samples.pt (the images as generated, with prompts "a|b"), metrics.json
(digits: the rates).
"""
import torch

import common
import part_a
from minidiff import deepfloyd, guidance, viz
from minidiff.sampling import iterative_denoise

GAMMA = 7.0                                                                                  # §1.8
ILLUSION_NOISE_LEVEL = 50   # DeepFloyd's stage II for illusions (Geng et al.'s code): both prompts, both views, level 50
PAIRS = {   # (upright, through the view, the view)
    "photos": [("an oil painting of an old man", "an oil painting of people around a campfire", "flip"),
               ("an oil painting of a snowy mountain village", "a photo of the amalfi cost", "flip"),
               ("a lithograph of a skull", "a photo of a hipster barista", "flip")],
    "digits": [("6", "9", "rot180"), ("2", "5", "flip"), ("0", "8", "flip")]}
SAMPLES_PER_PAIR = {"photos": 1, "digits": 4}


def options(p):
    p.add_argument("--view", choices=sorted(guidance.VIEWS),
                   help="the second view, for every pair (default: each default pair's, flip for --prompt)")
    p.add_argument("--num-samples", type=common.integer(1), help="samples per prompt pair (default: 1 for photos, 4 for digits)")


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_8_visual_anagrams", argv, options,
                                                  image=None, prompt=2)          # --prompt UPRIGHT VIEWED
    pairs = [(*args.prompt, "flip")] if args.prompt else part_a.pick(args, backbone, PAIRS)
    pairs = [(a, b, args.view or view) for a, b, view in pairs]
    if any(view == "negate" for *_, view in pairs) and backbone.image_range[0] >= 0:
        raise ValueError(f"--view negate inverts images in [-1, 1] (DeepFloyd); the {backbone.name} model works in "
                         f"{list(backbone.image_range)}, where -x is no image: pick another --view")
    n = part_a.count(args, backbone, SAMPLES_PER_PAIR, "num_samples")
    judged = part_a.judges(backbone, dev, rec)
    drawn = max(n, part_a.MEASURED) if judged else n                         # digits: the figure's + the measured
    rows, names, images, labels, both, firsts = [], [], [], [], [], []
    for a, b, view_name in pairs:
        view = guidance.view(view_name, backbone.image_shape[-1])            # what the model sees, at its size
        conds, uncond = [backbone.embed([a]), backbone.embed([b])], backbone.embed([""])
        eps_fn = guidance.anagram(backbone.model_fn, conds, [guidance.identity(), view], uncond, GAMMA)
        x = iterative_denoise(eps_fn, backbone.schedule, part_a.noise(backbone, drawn, dev, gen), backbone.timesteps,
                              generator=gen, progress=True)
        first = x                                                          # IF: the 64 px stage-I result
        x = backbone.upsample(x, [a] * drawn, noise_level=ILLUSION_NOISE_LEVEL, guide=lambda model_fn, S: (
            guidance.anagram(model_fn, conds, [guidance.identity(), guidance.view(view_name, S)], uncond,
                             deepfloyd.STAGE2_GUIDANCE)))                 # model range; IF: stage II, 256 px
        seen = backbone.to_unit(guidance.view(view_name, x.shape[-1]).apply(x))   # the view, in the model's range
        x = backbone.to_unit(x)
        firsts += [list(backbone.to_unit(first[:n])), list(backbone.to_unit(view.apply(first[:n])))]
        if judged:                                                         # read as a upright AND as b in the view
            hits = (part_a.read(judged, x) == part_a.label_of(a)) & (part_a.read(judged, seen) == part_a.label_of(b))
            both.append(hits)
            part_a.measure(rec, f"{a}|{b}", hits, f'"{a}" upright and "{b}" through {view.name}')
        rows += [list(x[:n]), list(seen[:n])]
        names += [part_a.title(a), f"{view.name}: {part_a.title(b)}"]
        images.append(x[:n])
        labels += [f"{a}|{b}"] * n
    rec.wrote(viz.save_table(rows, rec.out / "anagrams.png", row_titles=names,
                             title=f"§1.8 visual anagrams, gamma = {GAMMA:g} ({backbone.name})"))
    if firsts[0][0].shape != rows[0][0].shape:                             # IF: the stage-I results, the deliverable
        rec.wrote(viz.save_table(firsts, rec.out / "anagrams_stage1.png", row_titles=names,
                                 title=f"§1.8 visual anagrams, stage I ({firsts[0][0].shape[-1]} px)"))
    part_a.save_samples(rec, torch.cat(images), labels)
    if judged:
        part_a.measure(rec, "all pairs", torch.cat(both), "every pair read both ways")
        rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
