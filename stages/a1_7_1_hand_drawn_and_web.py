"""Report 5A §1.7.1, editing hand-drawn and web images: SDEdit (§1.7) of images from outside the training data.

The defaults are the sketches in data/drawings/ (white strokes on black, see data/drawings/README.md) and one
photo from data/ as the "web image"; --image takes your own. The MNIST model pulls each toward a digit.
Outputs in outputs/a1_7_1_hand_drawn_and_web/: edits.png (rows = images, columns i_start = 1 .. 20, original)
and samples.pt.
"""
import common
import part_a
from minidiff import viz
from minidiff.data import DATA_DIR

I_STARTS = (1, 3, 5, 7, 10, 20)                                   # §1.7.1
GAMMA = 7.0                                                       # §1.7, CFG as in §1.6
PROMPT = {"deepfloyd": ["a high quality photo"], "mnist": [""]}   # §1.7.1
DRAWINGS = sorted((DATA_DIR / "drawings").glob("*.png"))
IMAGES = {"deepfloyd": [DATA_DIR / "coffee.png", *DRAWINGS], "mnist": [*DRAWINGS, DATA_DIR / "rocket.png"]}


def main(argv=None):
    args, dev, gen, backbone, out = part_a.setup(__doc__, "a1_7_1_hand_drawn_and_web", argv)
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    paths = part_a.pick(args, backbone, IMAGES, "image")
    images = [backbone.load_image(p) for p in paths]
    eps_fn = part_a.eps_fn_for(backbone, prompt, GAMMA)
    rows, edits, cols = part_a.sdedit_rows(backbone, [eps_fn] * len(images), images, I_STARTS, gen)
    common.wrote(viz.save_table(rows, out / "edits.png", col_titles=cols, row_titles=[p.stem for p in paths],
                                title=f"§1.7.1 SDEdit of drawings and a web image, {part_a.title(prompt)} "
                                      f"({backbone.name})"))
    part_a.save_samples(out, edits, [prompt] * len(edits))


if __name__ == "__main__":
    common.run(main)
