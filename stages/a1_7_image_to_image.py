"""Report 5A §1.7, image-to-image translation (SDEdit; Meng et al. 2021): each test image noised to
timesteps[i_start] by [A.1] and denoised with CFG (gamma = 7, "a high quality photo"; MNIST: the unconditional "").
Small i_start = more noise = a new image; large i_start = close to the input.

Outputs in outputs/a1_7_image_to_image/: edits.png (one row per image, columns i_start = 1, 3, 5, 7, 10, 20 and
the original) and samples.pt (the edits, row by row).
With digits the Part B judge reads MEASURED edits of each image at each i_start (one batch of as many seeds): how
many keep the original digit, a rate that grows with i_start (metrics.json).
"""
import common
import part_a
from minidiff import viz

I_STARTS = (1, 3, 5, 7, 10, 20)                                   # §1.7
GAMMA = 7.0                                                       # §1.7, CFG as in §1.6
PROMPT = {"photos": ["a high quality photo"], "digits": [""]}   # §1.7


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_7_image_to_image", argv, prompt=1)
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    named = part_a.inputs(args, backbone)
    eps_fn = part_a.eps_fn_for(backbone, prompt, GAMMA)
    judged = part_a.judges(backbone, dev, rec)
    rows, edits, cols, batches = part_a.sdedit_rows(backbone, [eps_fn] * len(named), [x for _, x in named], I_STARTS,
                                                    gen, drawn=part_a.MEASURED if judged else 1)
    rec.wrote(viz.save_table(rows, rec.out / "edits.png", col_titles=cols, row_titles=[n for n, _ in named],
                             title=f"§1.7 SDEdit, {part_a.title(prompt)}, gamma = {GAMMA:g} ({backbone.name})"))
    part_a.save_samples(rec, edits, [prompt] * len(edits))
    if judged:                                       # the edits keep the original's digit more as i_start grows
        originals = [part_a.read(judged, backbone.to_unit(x))[0] for _, x in named]
        part_a.measure_edits(rec, judged, batches, I_STARTS, originals, "original", "the original digit")
        rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
