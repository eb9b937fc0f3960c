"""Report 5A §1.7.3, text-conditional image-to-image translation: SDEdit (§1.7) guided by a new prompt
(CFG [A.4], gamma = 7), so the edit drifts toward the prompt while keeping the input's layout.
Report pairs: the test photos with "a rocket ship", "a pencil", "a photo of a hipster barista"; MNIST: the three
test digits (7, 2, 3) edited toward "1", "7" and "8".

Outputs in outputs/a1_7_3_text_conditioned/: edits.png (one row per image/prompt pair, columns i_start = 1 .. 20,
original) and samples.pt.
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
    rows, edits, cols = part_a.sdedit_rows(backbone, eps_fns, [x for _, x in named], I_STARTS, gen)
    rec.wrote(viz.save_table(rows, rec.out / "edits.png", col_titles=cols,
                             row_titles=[f"{n} -> {part_a.title(p)}" for (n, _), p in zip(named, prompts)],
                             title=f"§1.7.3 text-conditioned SDEdit, gamma = {GAMMA:g} ({backbone.name})"))
    part_a.save_samples(rec, edits, [p for p in prompts for _ in I_STARTS])
    return rec


if __name__ == "__main__":
    common.run(main)
