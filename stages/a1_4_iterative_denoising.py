"""Report 5A §1.4, iterative denoising with strided timesteps [A.3] (990, 960, ..., 0; MNIST 290, 280, ..., 0).

The test image is noised to timesteps[I_START] (t = 690 for IF, 190 for MNIST) and denoised step by step.
Figures in outputs/a1_4_iterative_denoising/:
  steps.png       x_t at every 5th step of the loop (IF: t = 690, 540, 390, 240, 90)
  compare.png     original, noisy, iteratively denoised, one-step denoised (§1.3), Gaussian blur (§1.2)
  denoising.gif   x_t and x0_hat along the whole loop
"""
import torch

import common
import part_a
from minidiff import viz
from minidiff.sampling import iterative_denoise, one_step_denoise

I_START = 10                                                      # §1.4: timesteps[10] = 690 (IF)
EVERY = 5                                                         # §1.4: show every 5th step
PROMPT = {"deepfloyd": ["a high quality photo"], "mnist": [""]}   # §1.4, no CFG


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_4_iterative_denoising", argv, part_a.add_blur_option,
                                                  image=1, prompt=1)
    ts, s = backbone.timesteps, backbone.schedule
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    eps_fn = part_a.eps_fn_for(backbone, prompt)
    name, x0 = part_a.inputs(args, backbone)[0]
    x_t = s.add_noise(x0, ts[I_START], torch.randn(x0.shape, generator=gen, device=dev))     # [A.1]

    shown, frames = [(ts[I_START], x_t)], [torch.cat([x_t, x_t])]

    def callback(i, t_prev, x, x0_hat):                # after step i the sample is at timesteps[i + 1]
        frames.append(torch.cat([x, x0_hat]))
        if (i + 1 - I_START) % EVERY == 0:
            shown.append((t_prev, x))

    clean = iterative_denoise(eps_fn, s, x_t, ts, i_start=I_START, generator=gen, callback=callback)
    one_step = one_step_denoise(eps_fn, s, x_t, ts[I_START])
    blurred = part_a.blur(args, backbone, x_t)                                             # §1.2

    u = backbone.to_unit
    rec.wrote(viz.save_table([[u(x)[0] for _, x in shown]], rec.out / "steps.png",
                             col_titles=[f"t = {t}" for t, _ in shown],
                             title=f"§1.4 every {EVERY}th step from t = {ts[I_START]} ({backbone.name})"))
    rec.wrote(viz.save_table([[u(x)[0] for x in (x0, x_t, clean, one_step, blurred)]], rec.out / "compare.png",
                             col_titles=["original", f"noisy t = {ts[I_START]}", "iterative", "one-step",
                                         "Gaussian blur"],
                             title=f"§1.4 {name}, {part_a.title(prompt)} ({backbone.name})"))
    rec.wrote(viz.save_gif([u(f) for f in frames], rec.out / "denoising.gif", nrow=2))
    return rec


if __name__ == "__main__":
    common.run(main)
