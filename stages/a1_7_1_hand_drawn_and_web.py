"""Report 5A §1.7.1, editing hand-drawn and web images: SDEdit (§1.7) of images from outside the training data.

The defaults: for DeepFloyd, a photo from data/ as the "web image" and the line sketches in data/sketches/
(house, spiral, tree; see data/sketches/README.md); for MNIST, the digit sketches in data/drawings/ (white strokes
on black, like MNIST) and a photo. --image takes your own. Each model pulls the input toward its own images.
Outputs in outputs/a1_7_1_hand_drawn_and_web/: edits.png (rows = images, columns i_start = 1 .. 20, original)
and samples.pt.
"""
import common
import part_a
from minidiff import viz
from minidiff.data import DATA_DIR

I_STARTS = (1, 3, 5, 7, 10, 20)                                   # §1.7.1
GAMMA = 7.0                                                       # §1.7, CFG as in §1.6
PROMPT = {"photos": ["a high quality photo"], "digits": [""]}   # §1.7.1
IMAGES = {"photos": [DATA_DIR / "coffee.png", *sorted((DATA_DIR / "sketches").glob("*.png"))],
          "digits": [*sorted((DATA_DIR / "drawings").glob("*.png")), DATA_DIR / "rocket.png"]}


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_7_1_hand_drawn_and_web", argv, prompt=1)
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    paths = part_a.pick(args, backbone, IMAGES, "image")
    images = [backbone.load_image(p) for p in paths]
    eps_fn = part_a.eps_fn_for(backbone, prompt, GAMMA)
    rows, edits, cols, _ = part_a.sdedit_rows(backbone, [eps_fn] * len(images), images, I_STARTS, gen)
    rec.wrote(viz.save_table(rows, rec.out / "edits.png", col_titles=cols, row_titles=[p.stem for p in paths],
                             title=f"§1.7.1 SDEdit of drawings and a web image, {part_a.title(prompt)} "
                                   f"({backbone.name})"))
    part_a.save_samples(rec, edits, [prompt] * len(edits))
    return rec


if __name__ == "__main__":
    common.run(main)
