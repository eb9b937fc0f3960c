"""The fall 2026 draft's §1.4, visualizing velocity: what a one-step estimate would change in a noisy image, next to
what it should change.

On a flow the model's velocity u_hat moves x_t straight to the clean image in the time left: the predicted update is
(1 - t) u_hat = x1_hat - x_t, the true one x1 - x_t. On a DDPM backbone the same picture shows x0_hat - x_t against
x0 - x_t (x0_hat from the noise estimate, §1.3). Either way: predicted update, true update, and their per-pixel
difference, at the §1.1 noise levels.
Figure: outputs/a1_3_1_visualizing_velocity/updates.png, per test image the noisy images, the predicted and true
updates (grey = 0, white = +1, black = -1 in [0, 1] pixel units) and the absolute error (black = 0); metrics.json,
the RMS of each update's error.
"""
import common
import part_a
from minidiff import viz

NOISE_FRACTIONS = (0.25, 0.5, 0.75)                                 # §1.1 (the draft: t = 0.25, 0.5, 0.75)
PROMPT = {"photos": ["a high quality photo"], "digits": [""]}       # §1.3, no CFG


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_3_1_visualizing_velocity", argv, prompt=1)
    ts = part_a.noise_levels(backbone, NOISE_FRACTIONS)
    eps_fn = part_a.eps_fn_for(backbone, part_a.pick(args, backbone, PROMPT)[0])
    lo, hi = backbone.image_range
    shown = lambda d: (0.5 + 0.5 * d / (hi - lo)).clamp(0, 1)[0]    # noqa: E731  a signed difference as grey levels
    rows, names = [], []
    for name, x0 in part_a.inputs(args, backbone):
        noisy = part_a.noised_series(backbone, x0, ts, gen)
        predicted, true = [], []
        for x_t, t in zip(noisy, ts):
            estimate, _ = eps_fn(x_t, t)
            predicted.append(backbone.schedule.predict(x_t, t, estimate)[0] - x_t)   # x0_hat - x_t = (1 - t) u_hat
            true.append(x0 - x_t)
        errors = [(p - q).abs() / (hi - lo) for p, q in zip(predicted, true)]
        rows += [[backbone.to_unit(x)[0] for x in noisy], [shown(d) for d in predicted], [shown(d) for d in true],
                 [e.clamp(0, 1)[0] for e in errors]]
        names += [f"{name}: x_t", "predicted update", "true update", "|error|"]
        rec.metrics[name] = {f"t = {t:g}": float(e.pow(2).mean().sqrt()) for t, e in zip(ts, errors)}
    rec.notes.append("RMS error of the predicted update, in [0, 1] pixels: " + "; ".join(
        f"{n}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()) for n, m in rec.metrics.items()))
    rec.wrote(viz.save_table(rows, rec.out / "updates.png", col_titles=[f"t = {t:g}" for t in ts], row_titles=names,
                             title=f"predicted vs true update to the clean image ({backbone.name})"))
    rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
