"""Report 5A Part 0, sampling from DeepFloyd IF: the three prompts through stage I (64 px) and stage II (256 px)
at num_inference_steps = 5, 10 and 20, with one fixed seed.

The report ran IF's diffusers pipelines with their defaults; this stage reproduces them with our loop:
  - timesteps: for N steps, the pipelines' DDPM "leading" spacing, t = (N-1)s, ..., s, 0 with s = 1000 // N, and a
    last step from t = 0 to the clean image (deepfloyd.pipeline_timesteps):
      N = 5: 800, 600, 400, 200, 0;   N = 10: 900, 800, ..., 0;   N = 20: 950, 900, ..., 0;
  - stage I: CFG [A.4] gamma = 7 against "" and dynamic thresholding at 1.5 (IF-I's scheduler config);
  - stage II: the same N steps, CFG gamma = 4, the stage-I image noised to level 250 (DeepFloydBackbone.upsample).
The seed is reset before each setting, so the three figures start from the same noise.
DeepFloyd IF only (--backbone auto means deepfloyd here): the MNIST backbone has no two-stage cascade.

Outputs in outputs/a0_sampling/: samples_5_steps.png, samples_10_steps.png, samples_20_steps.png (a row of 64 px
stage-I images above a row of their 256 px stage-II upsamples) and samples.pt ({"images": (9, 3, 256, 256),
"stage1": (9, 3, 64, 64), both in [0, 1], "prompts", "num_inference_steps": (9,)}, setting by setting).
"""
import torch

import common
import part_a
from minidiff import data, viz
from minidiff.deepfloyd import pipeline_timesteps
from minidiff.sampling import iterative_denoise

PROMPTS = ("an oil painting of a snowy mountain village", "a man wearing a hat", "a rocket ship")   # Part 0
NUM_INFERENCE_STEPS = (5, 10, 20)                                                               # Part 0
GAMMA = 7.0               # stage I CFG: the IF pipeline's default guidance_scale
STAGE2_GAMMA = 4.0        # stage II CFG: the super-resolution pipeline's default
THRESHOLD = 1.5           # stage I dynamic thresholding (IF-I-XL scheduler_config.json, sample_max_value)


def main(argv=None):
    p = part_a.parser(__doc__, image=None)
    p.add_argument("--steps", type=common.integer(1, 1000), nargs="+", default=None,
                   help=f"num_inference_steps settings (default: {' '.join(map(str, NUM_INFERENCE_STEPS))}; "
                        "--quick: 5 only)")
    args = p.parse_args(argv)
    if args.backbone not in ("auto", "deepfloyd"):
        raise ValueError(f"Part 0 samples the two-stage DeepFloyd IF cascade; run it with --backbone deepfloyd "
                         f"(the {args.backbone} backbone has no stage II)")
    dev = common.device(args.device)
    backbone = part_a.load_deepfloyd(args, dev)   # also for auto: there is nothing to fall back to
    rec = common.record(args, "a0_sampling")
    rec.notes.append(backbone.memory_note)
    prompts = list(args.prompt or PROMPTS)
    settings = args.steps or (NUM_INFERENCE_STEPS[:1] if args.quick else NUM_INFERENCE_STEPS)
    finals, firsts, steps = [], [], []
    for n in settings:
        gen = common.generator(args.seed, dev)                    # the same seed for every setting
        timesteps = pipeline_timesteps(n)
        eps_fn = part_a.eps_fn_for(backbone, prompts, GAMMA)
        x = iterative_denoise(eps_fn, backbone.schedule, part_a.noise(backbone, len(prompts), dev, gen), timesteps,
                              generator=gen, threshold=THRESHOLD, progress=True)       # (3, 3, 64, 64)
        y = backbone.upsample(x, prompts, num_inference_steps=n, guidance_scale=STAGE2_GAMMA, generator=gen)
        x, y = backbone.to_unit(x), backbone.to_unit(y)                                 # (3, 3, 256, 256)
        rec.wrote(viz.save_table([list(x), list(y)], rec.out / f"samples_{n}_steps.png",
                                 col_titles=[part_a.title(q) for q in prompts],
                                 row_titles=[f"stage I, {x.shape[-1]} px", f"stage II, {y.shape[-1]} px"],
                                 title=f"Part 0: num_inference_steps = {n}, seed {args.seed}"))
        firsts.append(x.cpu())
        finals.append(y.cpu())
        steps += [n] * len(prompts)
    rec.wrote(data.save_samples(rec.out / "samples.pt", torch.cat(finals), prompts=prompts * len(settings),
                                stage1=torch.cat(firsts).float().clamp(0, 1), num_inference_steps=torch.tensor(steps)))
    return rec


if __name__ == "__main__":
    common.run(main)
