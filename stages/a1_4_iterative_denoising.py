"""Report 5A §1.4, iterative denoising with strided timesteps [A.3] (990, 960, ..., 0; MNIST 290, 280, ..., 0), and
the fall 2026 draft's §1.5, the same on a flow: Euler from t = 0.5 with h = 0.02 (25 updates).

The test image is noised to timesteps[I_START] (t = 690 for IF, 190 for the MNIST DDPM; t = 0.5 on a flow) and
denoised step by step, then compared with one-step denoising (§1.3) and a Gaussian blur (§1.2) by the mean squared
error to the clean image (the draft's table). Expect the one-step estimate to score well on MSE although it is the
blurriest: it estimates the mean of every clean image the noisy one could have come from, which is what minimises
the squared error, while the loop draws one sharp image among them.
Figures in outputs/a1_4_iterative_denoising/:
  steps.png       x_t at every 5th step of the loop (IF: t = 690, 540, 390, 240, 90)
  compare.png     original, noisy, iteratively denoised, one-step denoised, Gaussian blur, each with its MSE
  denoising.gif   x_t and x0_hat along the whole loop
  metrics.json    the three MSEs (in [0, 1] pixels)
"""
import torch

import common
import part_a
from minidiff import viz
from minidiff.sampling import iterative_denoise, one_step_denoise
from minidiff.schedule import FlowPath

I_START = 10                                                      # §1.4: timesteps[10] = 690 (IF)
FLOW_START = 0.5                                                  # the fall 2026 draft's §1.5: Euler from t = 0.5
EVERY = 5                                                         # §1.4: show every 5th step
PROMPT = {"photos": ["a high quality photo"], "digits": [""]}     # §1.4, no CFG


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_4_iterative_denoising", argv, part_a.add_blur_option,
                                                  image=1, prompt=1)
    ts, s = backbone.timesteps, backbone.schedule
    i_start = I_START if not isinstance(s, FlowPath) else ts.index(min(ts, key=lambda t: abs(t - FLOW_START)))
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    eps_fn = part_a.eps_fn_for(backbone, prompt)
    name, x0 = part_a.inputs(args, backbone)[0]
    x_t = s.add_noise(x0, ts[i_start], torch.randn(x0.shape, generator=gen, device=dev))     # [A.1]

    shown, frames = [(ts[i_start], x_t)], [torch.cat([x_t, x_t])]

    def callback(i, t_prev, x, x0_hat):                # after step i the sample is at timesteps[i + 1]
        frames.append(torch.cat([x, x0_hat]))
        if (i + 1 - i_start) % EVERY == 0:
            shown.append((t_prev, x))

    clean = iterative_denoise(eps_fn, s, x_t, ts, i_start=i_start, generator=gen, callback=callback)
    one_step = one_step_denoise(eps_fn, s, x_t, ts[i_start])
    blurred = part_a.blur(args, backbone, x_t)                                             # §1.2

    u = backbone.to_unit
    rec.metrics = {f"mse_{k}": float(((u(x) - u(x0)) ** 2).mean())
                   for k, x in (("iterative", clean), ("one_step", one_step), ("blur", blurred))}
    rec.notes.append("MSE to the clean image: " + ", ".join(f"{k[4:]} {v:.4f}" for k, v in rec.metrics.items()))
    rec.wrote(viz.save_table([[u(x)[0] for _, x in shown]], rec.out / "steps.png",
                             col_titles=[f"t = {t:g}" for t, _ in shown],
                             title=f"§1.4 every {EVERY}th step from t = {ts[i_start]:g} ({backbone.name})"))
    mse = [f"\nMSE {rec.metrics[f'mse_{k}']:.4f}" for k in ("iterative", "one_step", "blur")]
    rec.wrote(viz.save_table([[u(x)[0] for x in (x0, x_t, clean, one_step, blurred)]], rec.out / "compare.png",
                             col_titles=["original", f"noisy t = {ts[i_start]:g}", "iterative" + mse[0],
                                         "one-step" + mse[1], "Gaussian blur" + mse[2]],
                             title=f"§1.4 {name}, {part_a.title(prompt)} ({backbone.name})"))
    rec.wrote(viz.save_gif([u(f) for f in frames], rec.out / "denoising.gif", nrow=2))
    rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
