"""Report 5A §1.7.3, text-conditional image-to-image translation: SDEdit (§1.7) guided by a new prompt
(CFG [A.4], gamma = 7), so the edit drifts toward the prompt while keeping the input's layout.
Report pairs: the test photos with "a rocket ship", "a pencil", "a photo of a hipster barista"; MNIST: the three
test digits (7, 2, 3) edited toward "1", "7" and "8".

Outputs in outputs/a1_7_3_text_conditioned/: edits.png (one row per image/prompt pair, columns i_start = 1 .. 20,
original) and samples.pt.
With digits the Part B judge reads MEASURED edits at each i_start (one batch of as many seeds): the share read as
the prompt's digit falls, and as the original's rises, as i_start grows (metrics.json).
"""
import common
import part_a
from minidiff import viz

I_STARTS = (1, 3, 5, 7, 10, 20)                                                           # §1.7.3
GAMMA = 7.0                                                                               # §1.7.3
PROMPTS = {"photos": ["a rocket ship", "a pencil", "a photo of a hipster barista"],   # one per image
           "digits": ["1", "7", "8"]}


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_7_3_text_conditioned", argv)
    prompts = part_a.pick(args, backbone, PROMPTS)
    named = part_a.inputs(args, backbone)
    prompts = [prompts[i % len(prompts)] for i in range(len(named))]            # image i gets prompt i (cycled)
    eps_fns = [part_a.eps_fn_for(backbone, p, GAMMA) for p in prompts]
    judged = part_a.judges(backbone, dev, rec)
    rows, edits, cols, batches = part_a.sdedit_rows(backbone, eps_fns, [x for _, x in named], I_STARTS, gen,
                                                    drawn=part_a.MEASURED if judged else 1)
    rec.wrote(viz.save_table(rows, rec.out / "edits.png", col_titles=cols,
                             row_titles=[f"{n} -> {part_a.title(p)}" for (n, _), p in zip(named, prompts)],
                             title=f"§1.7.3 text-conditioned SDEdit, gamma = {GAMMA:g} ({backbone.name})"))
    part_a.save_samples(rec, edits, [p for p in prompts for _ in I_STARTS])
    if judged:                                       # from the prompt's digit (much noise) to the original's (little)
        originals = [part_a.read(judged, backbone.to_unit(x))[0] for _, x in named]
        asked = [part_a.label_of(p) for p in prompts]
        part_a.measure_edits(rec, judged, batches, I_STARTS, asked, "prompt", "the prompt's digit")
        part_a.measure_edits(rec, judged, batches, I_STARTS, originals, "original", "the original digit")
        rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
