"""2025 course §2.4-2.5: train the class-conditioned flow-matching UNet u_theta(x_t, t, c).

As the time-conditioned model (but with the time embeddings added, c1 * u0 + t1, c2 * u1 + t2, as in the DDPM
report), plus a one-hot digit c that is zeroed with probability 0.1 so the same network also learns the
unconditional velocity that classifier-free guidance needs (Ho & Salimans 2022). The course's hyperparameters: D = 64,
batch 64, 10 epochs, Adam 1e-2, ExponentialLR gamma = 0.1 ** (1 / epochs). Resumable.
Figures in outputs/fm2_5_train_class_conditioned/: loss.png; checkpoint.pt and model_epoch{1,5,10}.pt for sampling.
"""
import common
import part_b


def main(argv=None):
    args = part_b.add_training_args(common.parser(__doc__)).parse_args(argv)
    return part_b.run_training(args, "flow_class", "class-conditioned flow UNet")[1]


if __name__ == "__main__":
    common.run(main)
