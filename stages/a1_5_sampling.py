"""Report 5A §1.5, diffusion model sampling: NUM_SAMPLES images from pure noise with the strided loop
(i_start = 0), no guidance. The report's prompt is "a high quality photo"; MNIST samples unconditionally ("").

Outputs in outputs/a1_5_sampling/: samples.png (one row; DeepFloyd: the 64 px stage-I row above the 256 px one: stage
II's own CFG sharpens every upsample, so the contrast with §1.6 is in the 64 px row) and samples.pt.
"""
import common
import part_a
from minidiff import viz
from minidiff.sampling import iterative_denoise

NUM_SAMPLES = 5                                                   # §1.5
PROMPT = {"photos": ["a high quality photo"], "digits": [""]}   # §1.5, no CFG


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_5_sampling", argv, image=None, prompt=1)
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    x = part_a.noise(backbone, NUM_SAMPLES, dev, gen)
    x = iterative_denoise(part_a.eps_fn_for(backbone, prompt), backbone.schedule, x, backbone.timesteps,
                          generator=gen, progress=True)
    images = backbone.to_unit(backbone.upsample(x, [prompt] * NUM_SAMPLES))
    rows, row_titles, extra = part_a.stage_rows(backbone, x, images)          # IF: 64 px above 256 px
    rec.wrote(viz.save_table(rows, rec.out / "samples.png", row_titles=row_titles,
                             col_titles=[f"sample {i + 1}" for i in range(NUM_SAMPLES)],
                             title=f"§1.5 samples, {part_a.title(prompt)}, no CFG ({backbone.name})"))
    part_a.save_samples(rec, images, [prompt] * NUM_SAMPLES, **extra)
    return rec


if __name__ == "__main__":
    common.run(main)
