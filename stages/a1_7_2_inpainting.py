"""Report 5A §1.7.2, inpainting [A.5] (RePaint; Lugmayr et al. 2022): sample from pure noise, and after every step
reset the pixels to keep (mask = 0) to the original noised to the current timestep,

    x_t <- m x_t + (1 - m) forward(x_orig, t),   m = 1 where new content is generated,

with CFG (gamma = 7, "a high quality photo"; MNIST: the unconditional ""). Default masks (MASKS, one per test
image, cycled): the top half, the right half, a centred square; --mask takes image files (white = generate).
With digits the Part B judge reads MEASURED inpaintings of each image (one batch of as many seeds): how many keep
the original digit where the mask leaves enough of it (metrics.json).
Outputs in outputs/a1_7_2_inpainting/: inpainting.png (rows: original, mask, kept part, result) and samples.pt.
"""
import torch

import common
import part_a
from minidiff import viz
from minidiff.editing import inpaint

GAMMA = 7.0                                                       # §1.7.2, CFG as in §1.6
PROMPT = {"photos": ["a high quality photo"], "digits": [""]}   # §1.7.2
MASKS = ("top half", "right half", "centre square")


def box_mask(kind: str, H: int, W: int) -> torch.Tensor:
    """(1, 1, H, W) float in {0, 1}, 1 = generate."""
    m = torch.zeros(1, 1, H, W)
    if kind == "top half":
        m[..., : H // 2, :] = 1
    elif kind == "right half":
        m[..., :, W // 2:] = 1
    else:
        m[..., H // 4: H - H // 4, W // 4: W - W // 4] = 1
    return m


def main(argv=None):
    extra = lambda p: p.add_argument("--mask", nargs="+", default=None,  # noqa: E731
                                     help="mask image(s), white = generate (one per image, cycled)")
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_7_2_inpainting", argv, extra, prompt=1)
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    eps_fn = part_a.eps_fn_for(backbone, prompt, GAMMA)
    C, H, W = backbone.image_shape
    named = part_a.inputs(args, backbone)
    if args.mask:
        from minidiff.data import load_image
        masks = [(load_image(p, H, channels=1) > 0.5).float() for p in args.mask]
    else:
        masks = [box_mask(k, H, W) for k in MASKS]
    judged = part_a.judges(backbone, dev, rec)
    drawn = part_a.MEASURED if judged else 1                          # digits: one batch of as many seeds
    cols, results, u = [], [], backbone.to_unit
    for i, (name, x0) in enumerate(named):
        m = masks[i % len(masks)].to(dev)
        x = u(inpaint(eps_fn, backbone.schedule, x0.expand(drawn, *x0.shape[1:]), m, backbone.timesteps,
                      generator=gen))                                 # (drawn, C, H, W) in [0, 1]
        results.append(x[0])
        cols.append((name, [u(x0)[0], m[0].expand(C, H, W), (u(x0) * (1 - m))[0], x[0]]))
        if judged:                                                    # does the completion keep the digit?
            part_a.measure(rec, name, part_a.read(judged, x) == part_a.read(judged, u(x0))[0],
                           f"{name}: inpaintings read as the original digit")
    rows = [list(r) for r in zip(*[c for _, c in cols])]         # transpose: one column per image
    rec.wrote(viz.save_table(rows, rec.out / "inpainting.png", col_titles=[n for n, _ in cols],
                             row_titles=["original", "mask (white = new)", "kept", "inpainted"],
                             title=f"§1.7.2 inpainting [A.5], {part_a.title(prompt)} ({backbone.name})"))
    part_a.save_samples(rec, torch.stack(results), [prompt] * len(results))
    if judged:
        rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
