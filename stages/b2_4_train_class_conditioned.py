"""Report 5B §2.4: train the class-conditioned DDPM UNet eps_theta(x_t, t / T, c).

As the time-conditioned model, plus a one-hot digit c that is zeroed with probability 0.1 so the same network
also learns the unconditional estimate needed for classifier-free guidance (Ho & Salimans 2022, Algorithm 1).
Figures in outputs/b2_4_train_class_conditioned/: loss.png; checkpoint.pt and model_epoch{e}.pt for sampling.
"""
import common
import part_b


def main(argv=None):
    args = part_b.add_training_args(common.parser(__doc__)).parse_args(argv)
    return part_b.run_training(args, "class", "class-conditioned UNet")[1]


if __name__ == "__main__":
    common.run(main)
