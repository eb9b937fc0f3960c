"""Report 5B §2.1-2.2: train the time-conditioned DDPM UNet eps_theta(x_t, t / T).

Report hyperparameters: T = 300, betas linear 1e-4 .. 0.02, D = 64, batch 128, 20 epochs, Adam 1e-3 with
ExponentialLR gamma = 0.1 ** (1 / epochs) stepped every epoch (Ho et al. 2020, Algorithm 1). Resumable.
Figures in outputs/b2_2_train_time_conditioned/: loss.png; checkpoint.pt and model_epoch{e}.pt for sampling.
"""
import common
import part_b


def main(argv=None):
    args = part_b.add_training_args(common.parser(__doc__)).parse_args(argv)
    return part_b.run_training(args, "time", "time-conditioned UNet")[1]


if __name__ == "__main__":
    common.run(main)
